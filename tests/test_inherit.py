"""Inherited sockets (docs/inherited-sockets.md): ``from_socket()`` / ``from_fd()``
serve on a socket bound elsewhere, and ``inherit.listen_fds()`` takes the
sockets of systemd socket activation, so a supervisor can restart the
server without dropping the port.
"""
import http.client
import http.server
import json
import os
import socket
import struct
import subprocess
import sys

import pytest

from fastserver import inherit

import variants
from util import (
    HOST,
    TIMEOUT,
    background_server,
    open_fds,
    recv_until_eof,
    short_tmpdir,
    tcp_connect,
    tcp_roundtrip,
    udp_roundtrip,
    unix_dgram_roundtrip,
    unix_stream_roundtrip,
)


def stream_echo(fs):
    class Echo(fs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    return Echo


def datagram_echo(fs):
    class Echo(fs.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read())

    return Echo


def bound_socket(family=socket.AF_INET, type=socket.SOCK_STREAM, address=(HOST, 0)):
    sock = socket.socket(family, type)
    sock.bind(address)
    return sock


def is_listening(sock):
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def listen_queue(sock):
    """(connections waiting to be accepted, backlog) of a listening TCP
    socket: Linux reports both in TCP_INFO (tcpi_unacked, tcpi_sacked)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "TCP_INFO"):
        pytest.skip("TCP_INFO of a listening socket is Linux's")
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("II", info, 24)


# ---------------------------------------------------------------------------
# from_socket() and from_fd()
# ---------------------------------------------------------------------------


def test_adopt_a_bound_socket(fs):
    before = open_fds()
    sock = bound_socket()
    server = fs.TCPServer.from_socket(sock, stream_echo(fs))
    assert server.socket is sock
    assert server.server_address == sock.getsockname()
    assert is_listening(sock)  # listen() was called for it
    with background_server(server):
        assert tcp_roundtrip(server.server_address, b"bound\n") == b"bound\n"
    assert sock.fileno() == -1  # server_close() closed it: the server owned it
    assert open_fds() == before


def test_adopt_a_listening_socket_keeps_its_backlog(fs):
    sock = socket.create_server((HOST, 0), backlog=64)
    server = fs.ThreadingTCPServer.from_socket(sock, stream_echo(fs))
    with background_server(server):
        assert listen_queue(sock)[1] == 64  # not request_queue_size (5)
        for n in range(3):
            line = b"listening %d\n" % n
            assert tcp_roundtrip(server.server_address, line) == line


def test_from_fd(fs):
    before = open_fds()
    fd = bound_socket().detach()
    server = fs.TCPServer.from_fd(fd, stream_echo(fs))
    assert server.fileno() == fd
    assert not os.get_inheritable(fd)  # like the sockets servers make themselves
    with background_server(server):
        assert tcp_roundtrip(server.server_address, b"by fd\n") == b"by fd\n"
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by server_close()
    assert open_fds() == before


def test_from_fd_refused_leaves_the_fd_open(fs):
    udp = bound_socket(type=socket.SOCK_DGRAM)
    fd = udp.fileno()
    try:
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            fs.TCPServer.from_fd(fd, stream_echo(fs))
        os.fstat(fd)  # still open, still the caller's
        assert udp.getsockname()[1] != 0
    finally:
        udp.close()


def _wrong_sockets():
    """Sockets a server class refuses: (class name, socket maker, message)."""
    cases = [
        pytest.param("TCPServer", lambda: bound_socket(type=socket.SOCK_DGRAM), "SOCK_STREAM",
                     id="udp-to-tcp"),
        pytest.param("UDPServer", lambda: bound_socket(), "SOCK_DGRAM", id="tcp-to-udp"),
        pytest.param("TCPServer", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
                     "not bound", id="unbound"),
    ]
    if hasattr(socket, "AF_UNIX"):
        cases += [
            pytest.param("TCPServer", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
                         "AF_INET", id="unix-to-tcp"),
            pytest.param("UnixStreamServer", lambda: bound_socket(), "AF_UNIX", id="tcp-to-unix"),
        ]
    return cases


@pytest.mark.parametrize("class_name,make_socket,message", _wrong_sockets())
def test_wrong_socket_is_refused_untouched(fs, class_name, make_socket, message):
    sock = make_socket()
    fd = sock.fileno()
    try:
        with pytest.raises(ValueError, match=message):
            getattr(fs, class_name).from_socket(sock, stream_echo(fs))
        assert sock.fileno() == fd  # not closed, not detached
    finally:
        sock.close()


def test_closed_socket_is_refused(fs):
    sock = bound_socket()
    sock.close()
    with pytest.raises(ValueError, match="closed"):
        fs.TCPServer.from_socket(sock, stream_echo(fs))


def _ipv6_loopback_works():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback")
def test_ipv6_socket_on_an_ipv4_class(fs):
    """TCPServer's address_family is AF_INET; the server takes the socket's."""
    sock = bound_socket(socket.AF_INET6, address=("::1", 0))
    server = fs.TCPServer.from_socket(sock, stream_echo(fs))
    assert server.address_family == socket.AF_INET6
    with background_server(server):
        with socket.create_connection(server.server_address[:2], timeout=TIMEOUT) as client:
            client.sendall(b"over IPv6\n")
            assert recv_until_eof(client) == b"over IPv6\n"


def test_udp_server_from_socket(fs):
    sock = bound_socket(type=socket.SOCK_DGRAM)
    server = fs.UDPServer.from_socket(sock, datagram_echo(fs))
    with background_server(server):
        assert udp_roundtrip(server.server_address, b"datagram") == b"datagram"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
def test_unix_servers_from_socket(fs):
    with short_tmpdir() as directory:
        stream_path = os.path.join(directory, "stream.sock")
        stream = bound_socket(socket.AF_UNIX, address=stream_path)
        stream_server = fs.UnixStreamServer.from_socket(stream, stream_echo(fs))
        assert stream_server.server_address == stream_path
        with background_server(stream_server):
            assert unix_stream_roundtrip(stream_path, b"unix stream\n") == b"unix stream\n"

        dgram_path = os.path.join(directory, "dgram.sock")
        dgram = bound_socket(socket.AF_UNIX, socket.SOCK_DGRAM, address=dgram_path)
        dgram_server = fs.UnixDatagramServer.from_socket(dgram, datagram_echo(fs))
        with background_server(dgram_server):
            reply = unix_dgram_roundtrip(dgram_path, b"unix dgram", os.path.join(directory, "c"))
            assert reply == b"unix dgram"


def test_http_server_subclass_from_socket(fs):
    """A subclass with the stdlib's constructor signature, whose server_bind()
    adds to TCPServer's: its addition runs (server_name, server_port), the
    bind does not."""

    class HTTPServer(fs.TCPServer):
        allow_reuse_address = True

        def server_bind(self):
            fs.TCPServer.server_bind(self)
            host, port = self.server_address[:2]
            self.server_name = socket.getfqdn(host)
            self.server_port = port

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"port %d" % self.server.server_port
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    sock = bound_socket()
    port = sock.getsockname()[1]
    server = HTTPServer.from_socket(sock, Handler)
    assert server.server_port == port and server.server_name
    with background_server(server):
        connection = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b"port %d" % port
        finally:
            connection.close()


def test_failed_activation_closes_the_server(fs):
    """An exception in server_activate(): the server is closed, socket and
    all, as the stdlib's constructor does."""

    class Failing(fs.TCPServer):
        def server_activate(self):
            raise RuntimeError("no")

    before = open_fds()
    sock = bound_socket()
    with pytest.raises(RuntimeError):
        Failing.from_socket(sock, stream_echo(fs))
    assert sock.fileno() == -1
    assert open_fds() == before


# ---------------------------------------------------------------------------
# listen_fds(): the environment, in this process
# ---------------------------------------------------------------------------


@pytest.fixture
def systemd_env(monkeypatch):
    """Set the systemd variables for a test (restored afterwards)."""
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)

    def set_env(**variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_no_activation(systemd_env):
    assert inherit.listen_fds() == []


def test_variables_of_another_process_are_not_ours(systemd_env):
    systemd_env(LISTEN_PID=str(os.getppid()), LISTEN_FDS="1")
    assert inherit.listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "1"  # kept when asked to
    assert inherit.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ


@pytest.mark.parametrize("variables,message", [
    ({"LISTEN_FDS": "two"}, "LISTEN_FDS"),
    ({"LISTEN_FDS": "0"}, "positive"),
    ({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, "LISTEN_FDNAMES"),
], ids=["not-a-number", "zero", "names-mismatch"])
def test_malformed_variables(systemd_env, variables, message):
    systemd_env(LISTEN_PID=str(os.getpid()), **variables)
    with pytest.raises(ValueError, match=message):
        inherit.listen_fds()
    assert "LISTEN_PID" not in os.environ  # unset whatever the outcome


# ---------------------------------------------------------------------------
# systemd socket activation, in child processes
# ---------------------------------------------------------------------------

#: What systemd does between fork and exec: the passed sockets become fds
#: 3, 4, ... and LISTEN_FDS / LISTEN_PID (this very process) are set; then
#: the service's program runs in the same process.
EXEC_WRAPPER = """
import fcntl, os, sys
passed = [int(fd) for fd in sys.argv[1].split(",")]
# Out of the way first, so no passed fd is overwritten before it is moved.
spare = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in passed]
for fd in passed:
    os.close(fd)
for n, fd in enumerate(spare):
    os.dup2(fd, 3 + n)  # inheritable, as systemd leaves them
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(passed))
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""

#: The activated service: reports what listen_fds_with_names() gave it,
#: then serves ``requests`` connections on the socket named "web" (each
#: reply says which process served it) and exits.
ACTIVATED_SERVICE = variants.CHILD_IMPORT + """
import json, os, sys
from fastserver import inherit

VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
requests = int(sys.argv[1])
pairs = inherit.listen_fds_with_names()
report = {
    "names": [name for name, _ in pairs],
    "fds": [sock.fileno() for _, sock in pairs],
    "types": [int(sock.type) for _, sock in pairs],
    "inheritable": [os.get_inheritable(sock.fileno()) for _, sock in pairs],
    "variables_left": [name for name in VARIABLES if name in os.environ],
    "pid": os.getpid(),
}
served = 0

class Echo(ss.StreamRequestHandler):
    def handle(self):
        global served
        try:
            self.wfile.write(b"%d " % os.getpid() + self.rfile.readline())
        finally:  # counted even if it failed: the test fails, it does not hang
            served += 1
            if served == requests:  # the stdlib's own way to stop from a handler
                self.server._BaseServer__shutdown_request = True

server = ss.TCPServer.from_socket(dict(pairs)["web"], Echo)
server.serve_forever()
server.server_close()
print(json.dumps(report), flush=True)
"""


def start_activated(variant, sockets, requests, names=None):
    """A service started the way systemd starts one, with ``sockets``."""
    env = variants.child_env(variant)
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    fds = [sock.fileno() for sock in sockets]
    return subprocess.Popen(
        [sys.executable, "-c", EXEC_WRAPPER, ",".join(map(str, fds)),
         "-c", ACTIVATED_SERVICE, str(requests)],
        env=env, pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def finish(process):
    """The service's report, once it has exited cleanly."""
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, err.decode()
    return json.loads(out)


def served_by(reply):
    pid, line = reply.split(b" ", 1)
    return int(pid), line


def test_systemd_activation(fs, variant):
    listener = socket.create_server((HOST, 0))
    udp = bound_socket(type=socket.SOCK_DGRAM)
    with listener, udp:
        service = start_activated(variant, [listener, udp], requests=1, names="web:dns")
        reply = tcp_roundtrip(listener.getsockname(), b"activated\n")
        report = finish(service)
    assert served_by(reply) == (report["pid"], b"activated\n")
    assert report["names"] == ["web", "dns"]
    assert report["fds"] == [3, 4]
    assert report["types"] == [socket.SOCK_STREAM, socket.SOCK_DGRAM]
    assert report["inheritable"] == [False, False]  # FD_CLOEXEC set
    assert report["variables_left"] == []  # unset: children do not inherit them


def test_restart_without_dropping_the_port(fs, variant):
    """The supervisor keeps the listening socket: connections made while no
    service runs wait in its backlog and the next service serves them.
    None is refused."""
    listener = socket.create_server((HOST, 0), backlog=16)
    address = listener.getsockname()
    with listener:
        first = start_activated(variant, [listener], requests=2, names="web")
        replies = [tcp_roundtrip(address, b"before %d\n" % n) for n in range(2)]
        first_pid = finish(first)["pid"]
        assert [served_by(r) for r in replies] == [
            (first_pid, b"before %d\n" % n) for n in range(2)
        ]

        # No service now: the kernel completes these connections and queues them.
        waiting = [tcp_connect(address) for _ in range(3)]
        try:
            for n, client in enumerate(waiting):
                client.sendall(b"between %d\n" % n)
            if sys.platform.startswith("linux"):
                assert listen_queue(listener)[0] == 3
            second = start_activated(variant, [listener], requests=3, names="web")
            replies = [recv_until_eof(client) for client in waiting]
        finally:
            for client in waiting:
                client.close()
        second_pid = finish(second)["pid"]
    assert second_pid != first_pid
    assert [served_by(r) for r in replies] == [
        (second_pid, b"between %d\n" % n) for n in range(3)
    ]
