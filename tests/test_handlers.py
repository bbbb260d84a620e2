"""The request handler classes as the server drives them.

StreamRequestHandler (rfile/wfile, buffer sizes, timeout, Nagle, finish),
DatagramRequestHandler, BaseRequestHandler on datagram servers, and the
Unix-domain stream and datagram servers.  Every test runs against the
stdlib (the reference) and every fastserver variant through ``ss``.
"""
import array
import hashlib
import io
import os
import queue
import socket
import sys
import threading

import pytest

from util import (
    HOST,
    TIMEOUT,
    background_server,
    recv_exactly,
    recv_line,
    recv_until_eof,
    short_tmpdir,
    tcp_connect,
    unix_connect,
)

requires_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="requires AF_UNIX")


def recording(base):
    """A subclass of the server class ``base`` that records what happens.

    ``server.results``: what handlers put there; ``server.errors``: the
    exception type seen by each handle_error() call.
    """

    class Recording(base):
        def __init__(self, *args, **kwargs):
            self.results = queue.Queue()
            self.errors = queue.Queue()
            super().__init__(*args, **kwargs)

        def handle_error(self, request, client_address):
            self.errors.put(sys.exc_info()[0])

    return Recording


def tcp_server(ss, handler, cls="TCPServer"):
    return recording(getattr(ss, cls))((HOST, 0), handler)


def get(q):
    return q.get(timeout=TIMEOUT)


def assert_no_errors(server):
    assert server.errors.empty(), "handle_error called: %r" % (server.errors.get(),)


# ---------------------------------------------------------------------------
# StreamRequestHandler: rfile
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer"])
def test_rfile_readline_and_read(ss, cls):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            first = self.rfile.readline()
            second = self.rfile.readline()
            rest = self.rfile.read(10)
            self.server.results.put((first, second, rest))
            self.wfile.write(b"ok\n")

    server = tcp_server(ss, Handler, cls)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"line one\nline two\n0123456789tail")
            assert recv_line(client) == b"ok\n"
            assert recv_until_eof(client) == b""
        assert get(server.results) == (b"line one\n", b"line two\n", b"0123456789")
    assert_no_errors(server)


def test_rfile_readline_split_across_segments(ss):
    """A line that arrives in several pieces is reassembled by readline()."""
    go_on = threading.Event()

    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            self.server.results.put(self.rfile.readline())

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"par")
            go_on.wait(0.05)
            client.sendall(b"tial li")
            go_on.wait(0.05)
            client.sendall(b"ne\nnext")
            assert get(server.results) == b"partial line\n"
            assert recv_until_eof(client) == b""
    assert_no_errors(server)


def test_rfile_iteration_over_lines(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            lines = list(self.rfile)
            self.server.results.put(lines)
            self.wfile.write(b"%d\n" % len(lines))

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"a\nbb\n\nccc\nno newline")
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b"5\n"
        assert get(server.results) == [b"a\n", b"bb\n", b"\n", b"ccc\n", b"no newline"]
    assert_no_errors(server)


def test_rfile_default_is_buffered_reader(ss):
    # The documentation promises "the io.BufferedIOBase readable interface";
    # the stdlib gives an io.BufferedReader, fastserver's core its own reader.
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            self.server.results.put(
                (
                    self.rbufsize,
                    isinstance(self.rfile, io.BufferedIOBase),
                    self.rfile.readable(),
                    self.rfile.fileno() == self.connection.fileno(),
                    self.rfile.readline(),
                )
            )

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"x\n")
            assert get(server.results) == (-1, True, True, True, b"x\n")
            assert recv_until_eof(client) == b""
    assert_no_errors(server)


def test_rbufsize_zero_gives_raw_socketio(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT
        rbufsize = 0

        def handle(self):
            raw = isinstance(self.rfile, socket.SocketIO)
            line = self.rfile.readline()
            chunk = self.rfile.read(3)
            self.server.results.put((raw, line, chunk))

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"raw line\nabc")
            raw, line, chunk = get(server.results)
            assert raw is True
            assert line == b"raw line\n"
            # A raw read returns at most n bytes, possibly fewer.
            assert 1 <= len(chunk) <= 3 and b"abc".startswith(chunk)
            assert recv_until_eof(client) == b""
    assert_no_errors(server)


def test_rbufsize_custom_buffer(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT
        rbufsize = 16

        def handle(self):
            self.server.results.put(
                (
                    isinstance(self.rfile, io.BufferedIOBase),
                    self.rfile.readline(),
                    self.rfile.read(40),
                )
            )

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"L" * 30 + b"\n" + b"R" * 40)
            assert get(server.results) == (True, b"L" * 30 + b"\n", b"R" * 40)
            assert recv_until_eof(client) == b""
    assert_no_errors(server)


# ---------------------------------------------------------------------------
# StreamRequestHandler: wfile
# ---------------------------------------------------------------------------


def test_wfile_write_returns_byte_count(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            counts = [
                self.wfile.write(b"hello"),
                self.wfile.write(bytearray(b"-world")),
                self.wfile.write(memoryview(b"0123456789")[2:5]),
                # A multi-byte item format: the count is in bytes, not items.
                self.wfile.write(array.array("i", [1, 2, 3])),
                self.wfile.write(b""),
            ]
            self.server.results.put(counts)

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            data = recv_until_eof(client)
        counts = get(server.results)
    isize = array.array("i").itemsize
    assert counts == [5, 6, 3, 3 * isize, 0]
    assert data == b"hello-world234" + array.array("i", [1, 2, 3]).tobytes()
    assert_no_errors(server)


def test_wfile_writelines(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            pieces = [b"a", bytearray(b"bc"), memoryview(b"def"), b"\n"]
            self.server.results.put(self.wfile.writelines(pieces))

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_until_eof(client) == b"abcdef\n"
        assert get(server.results) is None
    assert_no_errors(server)


def test_wfile_default_is_unbuffered_writer(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            w = self.wfile
            self.server.results.put(
                (
                    self.wbufsize,
                    isinstance(w, io.BufferedIOBase),
                    isinstance(w, io.BufferedWriter),
                    w.writable(),
                    w.readable(),
                    w.closed,
                    w.fileno() == self.connection.fileno(),
                )
            )

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_until_eof(client) == b""
        assert get(server.results) == (0, True, False, True, False, False, True)
    assert_no_errors(server)


@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer"])
def test_wfile_unbuffered_reaches_client_before_finish(ss, cls):
    """wbufsize=0: a write is on the wire at once, with no flush()."""

    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            self.wfile.write(b"ping\n")
            # Only answered if the client already got "ping".
            self.server.results.put(self.rfile.readline())
            self.wfile.write(b"bye\n")

    server = tcp_server(ss, Handler, cls)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_line(client) == b"ping\n"
            client.sendall(b"pong\n")
            assert recv_until_eof(client) == b"bye\n"
        assert get(server.results) == b"pong\n"
    assert_no_errors(server)


def test_wbufsize_buffers_until_flush_and_finish(ss):
    written = threading.Event()
    checked = threading.Event()
    flushed = threading.Event()
    checked2 = threading.Event()

    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT
        wbufsize = 65536

        def handle(self):
            self.server.results.put(isinstance(self.wfile, io.BufferedWriter))
            self.wfile.write(b"buffered")
            written.set()
            checked.wait(TIMEOUT)
            self.wfile.flush()
            flushed.set()
            checked2.wait(TIMEOUT)
            # Never flushed explicitly: finish() must do it.
            self.wfile.write(b"tail")

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert get(server.results) is True
            assert written.wait(TIMEOUT)
            client.settimeout(0.3)
            with pytest.raises(socket.timeout):
                client.recv(100)
            client.settimeout(TIMEOUT)
            checked.set()
            assert flushed.wait(TIMEOUT)
            assert recv_exactly(client, len(b"buffered")) == b"buffered"
            checked2.set()
            assert recv_until_eof(client) == b"tail"
    assert_no_errors(server)


def test_files_closed_after_finish(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT
        wbufsize = 1024

        def handle(self):
            self.wfile.write(b"unflushed")

        def finish(self):
            before = (self.rfile.closed, self.wfile.closed)
            super().finish()
            self.server.results.put((before, self.rfile.closed, self.wfile.closed))

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_until_eof(client) == b"unflushed"
        assert get(server.results) == ((False, False), True, True)
    assert_no_errors(server)


def test_finish_tolerates_wfile_closed_in_handle(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT
        wbufsize = 1024

        def handle(self):
            self.wfile.write(b"closed early")
            self.wfile.close()

        def finish(self):
            super().finish()
            self.server.results.put((self.rfile.closed, self.wfile.closed))

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_until_eof(client) == b"closed early"
        assert get(server.results) == (True, True)
    assert_no_errors(server)


# ---------------------------------------------------------------------------
# StreamRequestHandler: connection, timeout, Nagle
# ---------------------------------------------------------------------------


def test_connection_is_the_request_socket(ss):
    class Handler(ss.StreamRequestHandler):
        def handle(self):
            self.server.results.put(
                (
                    self.connection is self.request,
                    isinstance(self.request, socket.socket),
                    self.client_address,
                    self.request.getpeername(),
                    self.server,
                    self.connection.gettimeout(),
                )
            )

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_until_eof(client) == b""
            is_req, is_sock, client_address, peer, srv, timeout = get(server.results)
            assert is_req and is_sock
            assert client_address == client.getsockname() == peer
            assert srv is server
            assert timeout is None
    assert_no_errors(server)


def test_timeout_attribute_sets_connection_timeout(ss):
    """A silent client makes readline() time out inside handle(): the error
    goes to handle_error() and the server goes on serving."""

    class Handler(ss.StreamRequestHandler):
        timeout = 0.3

        def handle(self):
            self.server.results.put(self.connection.gettimeout())
            line = self.rfile.readline()
            self.wfile.write(b"echo:" + line)

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as silent:
            assert get(server.results) == 0.3
            error = get(server.errors)
            assert issubclass(error, socket.timeout), error
            # The server shut the connection down after the error.
            assert recv_until_eof(silent) == b""
        with tcp_connect(server.server_address) as client:
            client.sendall(b"still serving\n")
            assert recv_until_eof(client) == b"echo:still serving\n"
            assert get(server.results) == 0.3
    assert_no_errors(server)


@pytest.mark.parametrize("nodelay", [True, False])
def test_disable_nagle_algorithm(ss, nodelay):
    class Handler(ss.StreamRequestHandler):
        disable_nagle_algorithm = nodelay

        def handle(self):
            nodelay = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            self.server.results.put(nodelay)

    server = tcp_server(ss, Handler)
    server.tcp_nodelay = False  # fastserver's opt-out: the stdlib's behaviour
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_until_eof(client) == b""
        value = get(server.results)
    assert bool(value) is nodelay
    assert_no_errors(server)


@pytest.mark.parametrize("kind", ["base", "stream", "get_request"])
def test_tcp_nodelay_is_on_by_default(fs, kind):
    """fastserver sets TCP_NODELAY on accepted TCP connections, whichever
    path accepts them (the core, or TCPServer.get_request called from an
    override)."""
    handler_base = fs.BaseRequestHandler if kind == "base" else fs.StreamRequestHandler

    class Handler(handler_base):
        def handle(self):
            self.server.results.put(self.request.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    class Server(recording(fs.TCPServer)):
        if kind == "get_request":
            def get_request(self):
                return super().get_request()

    server = Server((HOST, 0), Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            assert recv_until_eof(client) == b""
        assert get(server.results)
    assert_no_errors(server)


# ---------------------------------------------------------------------------
# StreamRequestHandler: half-close and large payloads
# ---------------------------------------------------------------------------


def test_write_after_client_half_closed(ss):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            data = self.rfile.read()  # until the client's FIN
            self.server.results.put(data)
            self.wfile.write(b"got " + data)
            self.wfile.write(b"; bye")

    server = tcp_server(ss, Handler)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"the whole request")
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b"got the whole request; bye"
        assert get(server.results) == b"the whole request"
    assert_no_errors(server)


MB = 1 << 20


@pytest.mark.parametrize("wbufsize", [0, 8192])
@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer"])
def test_large_payloads_each_way(ss, cls, wbufsize):
    payload = bytes(range(256)) * (MB // 256)
    assert len(payload) == MB

    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            data = self.rfile.read(MB)
            self.server.results.put(hashlib.sha256(data).hexdigest())
            self.server.results.put(self.wfile.write(data[::-1]))

    Handler.wbufsize = wbufsize
    server = tcp_server(ss, Handler, cls)
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            sender = threading.Thread(target=client.sendall, args=(payload,), daemon=True)
            sender.start()
            reply = recv_exactly(client, MB)
            sender.join(TIMEOUT)
            assert not sender.is_alive()
            assert recv_until_eof(client) == b""
        assert get(server.results) == hashlib.sha256(payload).hexdigest()
        assert get(server.results) == MB
    assert reply == payload[::-1]
    assert_no_errors(server)


def test_many_lines_pipelined(ss):
    """Many requests' worth of lines sent at once, answered line by line."""

    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            for line in self.rfile:
                if line == b"quit\n":
                    break
                self.wfile.write(line.upper())

    server = tcp_server(ss, Handler)
    lines = [b"line %d\n" % i for i in range(2000)]
    with background_server(server):
        with tcp_connect(server.server_address) as client:
            client.sendall(b"".join(lines) + b"quit\n")
            assert recv_until_eof(client) == b"".join(lines).upper()
    assert_no_errors(server)


# ---------------------------------------------------------------------------
# Datagram handlers
# ---------------------------------------------------------------------------


def udp_client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind((HOST, 0))
    return sock


@pytest.mark.parametrize("cls", ["UDPServer", "ThreadingUDPServer"])
def test_datagram_request_handler(ss, cls):
    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.server.results.put(
                (
                    self.packet,
                    self.socket is self.server.socket,
                    self.rfile.read(),
                    isinstance(self.rfile, io.BytesIO),
                    isinstance(self.wfile, io.BytesIO),
                    self.client_address,
                    self.request == (self.packet, self.socket),
                )
            )
            self.wfile.write(b"reply to ")
            self.wfile.write(self.packet)

    server = recording(getattr(ss, cls))((HOST, 0), Handler)
    with background_server(server):
        with udp_client() as client:
            for i in range(3):
                msg = b"datagram %d" % i
                client.sendto(msg, server.server_address)
                data, addr = client.recvfrom(65536)
                assert data == b"reply to " + msg
                assert addr == server.server_address
                expected = (msg, True, msg, True, True, client.getsockname(), True)
                assert get(server.results) == expected
    assert_no_errors(server)


def test_datagram_handler_sends_empty_reply_when_nothing_written(ss):
    """The stdlib's finish() does sendto(wfile.getvalue()) unconditionally:
    a handler that writes nothing still answers with an empty datagram."""

    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.server.results.put(self.packet)

    server = recording(ss.UDPServer)((HOST, 0), Handler)
    with background_server(server):
        with udp_client() as client:
            client.sendto(b"say nothing", server.server_address)
            data, addr = client.recvfrom(65536)
            assert (data, addr) == (b"", server.server_address)
            assert get(server.results) == b"say nothing"
            # Nothing else follows the empty datagram.
            client.settimeout(0.2)
            with pytest.raises(socket.timeout):
                client.recvfrom(65536)
    assert_no_errors(server)


def test_base_request_handler_on_udp(ss):
    class Handler(ss.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            self.server.results.put(
                (
                    type(self.request),
                    len(self.request),
                    data,
                    sock is self.server.socket,
                    self.client_address,
                )
            )
            sock.sendto(data[::-1], self.client_address)

    server = recording(ss.UDPServer)((HOST, 0), Handler)
    with background_server(server):
        with udp_client() as client:
            client.sendto(b"abcdef", server.server_address)
            assert client.recvfrom(100) == (b"fedcba", server.server_address)
            assert get(server.results) == (tuple, 2, b"abcdef", True, client.getsockname())
    assert_no_errors(server)


def test_empty_datagram_is_a_request(ss):
    class Handler(ss.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            self.server.results.put(data)
            sock.sendto(b"empty seen", self.client_address)

    server = recording(ss.UDPServer)((HOST, 0), Handler)
    with background_server(server):
        with udp_client() as client:
            client.sendto(b"", server.server_address)
            assert client.recvfrom(100)[0] == b"empty seen"
            assert get(server.results) == b""
    assert_no_errors(server)


@pytest.mark.parametrize("max_packet_size", [None, 100])
def test_max_packet_size_truncates(ss, max_packet_size):
    class Handler(ss.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            self.server.results.put(data)
            sock.sendto(b"%d" % len(data), self.client_address)

    base = recording(ss.UDPServer)
    if max_packet_size is not None:
        base = type("SmallPackets", (base,), {"max_packet_size": max_packet_size})
    server = base((HOST, 0), Handler)
    expected = 8192 if max_packet_size is None else max_packet_size
    assert server.max_packet_size == expected
    big = bytes(range(256)) * 40  # 10240 bytes
    with background_server(server):
        with udp_client() as client:
            client.sendto(big, server.server_address)
            assert client.recvfrom(100)[0] == b"%d" % expected
            assert get(server.results) == big[:expected]
            # The rest of the truncated datagram is gone, not a new request.
            client.sendto(b"small", server.server_address)
            assert client.recvfrom(100)[0] == b"5"
            assert get(server.results) == b"small"
    assert_no_errors(server)


# ---------------------------------------------------------------------------
# Unix-domain servers
# ---------------------------------------------------------------------------


@requires_unix
@pytest.mark.parametrize("cls", ["UnixStreamServer", "ThreadingUnixStreamServer"])
def test_unix_stream_handler(ss, cls):
    class Handler(ss.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            line = self.rfile.readline()
            self.server.results.put((self.client_address, self.connection.family))
            self.wfile.write(line.upper())

    with short_tmpdir() as d:
        path = os.path.join(d, "srv")
        server = recording(getattr(ss, cls))(path, Handler)
        assert server.server_address == path == server.socket.getsockname()
        with background_server(server):
            # Unbound client: the stdlib reports the accept() address, ''.
            with unix_connect(path) as client:
                client.sendall(b"anonymous\n")
                assert recv_until_eof(client) == b"ANONYMOUS\n"
            assert get(server.results) == ("", socket.AF_UNIX)
            # Bound client: its path.
            cpath = os.path.join(d, "cli")
            with unix_connect(path, bind_to=cpath) as client:
                client.sendall(b"named\n")
                assert recv_until_eof(client) == b"NAMED\n"
            assert get(server.results) == (cpath, socket.AF_UNIX)
        assert_no_errors(server)
        # server_close() does not unlink the path (neither does the stdlib).
        assert os.path.exists(path)


@requires_unix
@pytest.mark.parametrize("cls", ["UnixDatagramServer", "ThreadingUnixDatagramServer"])
def test_unix_datagram_handler(ss, cls):
    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.server.results.put(
                (self.client_address, self.packet, self.socket is self.server.socket)
            )
            self.wfile.write(self.rfile.read().upper())

    with short_tmpdir() as d:
        path = os.path.join(d, "srv")
        cpath = os.path.join(d, "cli")
        server = recording(getattr(ss, cls))(path, Handler)
        assert server.server_address == path
        with background_server(server):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
                client.settimeout(TIMEOUT)
                client.bind(cpath)
                client.sendto(b"unix datagram", path)
                assert client.recvfrom(100) == (b"UNIX DATAGRAM", path)
                assert get(server.results) == (cpath, b"unix datagram", True)
        assert_no_errors(server)


@requires_unix
def test_unix_datagram_unbound_client(ss):
    """An unbound client has no address: client_address is None, and the
    stdlib's DatagramRequestHandler.finish() then fails in sendto(), which
    goes to handle_error().  The server keeps serving."""

    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.server.results.put((self.client_address, self.packet))
            self.wfile.write(b"unreachable")

    with short_tmpdir() as d:
        path = os.path.join(d, "srv")
        server = recording(ss.UnixDatagramServer)(path, Handler)
        with background_server(server):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
                client.sendto(b"who am i", path)
                assert get(server.results) == (None, b"who am i")
                assert get(server.errors) is TypeError
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
                client.settimeout(TIMEOUT)
                client.bind(os.path.join(d, "cli"))
                client.sendto(b"named", path)
                assert client.recvfrom(100)[0] == b"unreachable"
                assert get(server.results) == (os.path.join(d, "cli"), b"named")
        assert_no_errors(server)
