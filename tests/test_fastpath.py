"""The fast-path rule: what the core does itself cannot be told apart from
the stdlib's Python methods, and any override takes the Python path."""
import os
import socket
import tempfile
import threading

import pytest

import fastserver
from fastserver import _engine, _plan

import variants


def plan(server):
    return _plan.plan_for(server)


def observe(module, server_class, address, client_factory, payload=b"x"):
    """What a handler sees of its request, on ``module``'s server."""
    seen = {}

    class Handler(module.BaseRequestHandler):
        def handle(self):
            request = self.request
            if isinstance(request, tuple):
                data, sock = request
                seen["request"] = ("datagram", data, sock is self.server.socket)
                sock.sendto(b"ok", self.client_address)
            else:
                seen["request"] = (
                    type(request), request.family, request.type, request.proto,
                    request.gettimeout(), os.get_inheritable(request.fileno()),
                    request.getblocking(),
                )
                request.recv(16)
                request.sendall(b"ok")
            seen["client_address"] = self.client_address

    server = server_class(address, Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        client = client_factory(server.server_address)
        with client:
            client.settimeout(5)
            if client.type == socket.SOCK_DGRAM:
                client.sendto(payload, server.server_address)
                assert client.recvfrom(16)[0] == b"ok"
            else:
                client.sendall(payload)
                assert client.recv(16) == b"ok"
            own_address = client.getsockname()
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    return seen, own_address


def _tcp_client(family):
    def connect(address):
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect(address)
        return client
    return connect


def _udp_client(family):
    def make(address):
        client = socket.socket(family, socket.SOCK_DGRAM)
        client.bind(("::1", 0) if family == socket.AF_INET6 else ("127.0.0.1", 0))
        return client
    return make


def _has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class TCP6Server(fastserver.TCPServer):
    address_family = socket.AF_INET6


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_request_and_address_match_the_stdlib(fs, family, kind):
    """The same handler sees the same request and client_address on the
    stdlib and on fastserver's C accept/recvfrom."""
    import socketserver

    if family == "ipv6" and not _has_ipv6():
        pytest.skip("no IPv6 loopback")
    af = socket.AF_INET if family == "ipv4" else socket.AF_INET6
    host = "127.0.0.1" if family == "ipv4" else "::1"
    results = []
    for module in (socketserver, fs):
        base = module.TCPServer if kind == "tcp" else module.UDPServer
        server_class = type("Server", (base,), {"address_family": af})
        client = _tcp_client(af) if kind == "tcp" else _udp_client(af)
        seen, own_address = observe(module, server_class, (host, 0), client)
        assert seen["client_address"] == own_address
        results.append(seen["request"])
    assert results[0] == results[1]


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
@pytest.mark.parametrize("client_kind", ["unnamed", "named", "abstract"])
def test_unix_client_address_matches_the_stdlib(fs, client_kind):
    import socketserver

    if client_kind == "abstract" and os.uname().sysname != "Linux":
        pytest.skip("abstract namespace is Linux only")
    results = []
    for module in (socketserver, fs):
        directory = tempfile.mkdtemp(dir="/tmp")

        def client(address):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if client_kind == "named":
                sock.bind(os.path.join(directory, "client"))  # noqa: B023 -- this iteration's
            elif client_kind == "abstract":
                sock.bind(b"\0fastserver-test-%d" % os.getpid())
            sock.connect(address)
            return sock

        try:
            seen, own_address = observe(module, module.UnixStreamServer,
                                        os.path.join(directory, "server"), client)
        finally:
            for name in ("client", "server"):
                try:
                    os.unlink(os.path.join(directory, name))
                except FileNotFoundError:
                    pass
            os.rmdir(directory)
        results.append(seen["request"])
        assert seen["client_address"] == own_address
    assert results[0] == results[1]


def test_default_servers_get_the_c_plan(fs):
    with fs.TCPServer(("127.0.0.1", 0), fs.BaseRequestHandler) as server:
        p = plan(server)
        assert (p.accept, p.verify_default, p.process_default, p.finish_default, p.shutdown) == (
            "stream", True, True, True, "stream")
    with fs.UDPServer(("127.0.0.1", 0), fs.BaseRequestHandler) as server:
        p = plan(server)
        assert (p.accept, p.shutdown) == ("datagram", "nothing")
    with fs.ThreadingTCPServer(("127.0.0.1", 0), fs.BaseRequestHandler) as server:
        p = plan(server)
        assert (p.accept, p.process_default) == ("stream", False)


@pytest.mark.parametrize("hook,field,expected", [
    ("get_request", "accept", "call"),
    ("verify_request", "verify_default", False),
    ("process_request", "process_default", False),
    ("finish_request", "finish_default", False),
    ("shutdown_request", "shutdown", "call"),
    ("close_request", "shutdown", "call"),
    ("fileno", "accept", "call"),
    ("service_actions", "service_actions_default", False),
])
@pytest.mark.parametrize("where", ["class", "instance"])
def test_an_override_takes_the_python_path(fs, hook, field, expected, where):
    calls = []
    base = getattr(fs.TCPServer, hook)

    def spy(self, *args):
        calls.append(hook)
        return base(self, *args)

    if where == "class":
        Server = type("Server", (fs.TCPServer,), {hook: spy})
        server = Server(("127.0.0.1", 0), fs.BaseRequestHandler)
    else:
        server = fs.TCPServer(("127.0.0.1", 0), fs.BaseRequestHandler)
        setattr(server, hook, spy.__get__(server))
    with server:
        assert getattr(plan(server), field) == expected
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            with socket.create_connection(server.server_address, timeout=5) as client:
                client.recv(1)  # the server closes after the empty handler
        finally:
            server.shutdown()
            thread.join(10)
    assert hook in calls


def test_a_swapped_socket_type_takes_the_python_path(fs):
    class MySocket(socket.socket):
        pass

    with fs.TCPServer(("127.0.0.1", 0), fs.BaseRequestHandler) as server:
        server.socket = MySocket(fileno=server.socket.detach())
        assert plan(server).accept == "call"


def test_a_listener_with_a_timeout_takes_the_python_path(fs):
    with fs.TCPServer(("127.0.0.1", 0), fs.BaseRequestHandler) as server:
        server.socket.settimeout(5)
        assert plan(server).accept == "call"


def test_a_non_blocking_listener_keeps_the_c_path_and_serves(fs):
    """A listener shared between processes is made non-blocking so that the
    process losing the accept race is not stuck in accept(2)."""
    class Echo(fs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    with fs.TCPServer(("127.0.0.1", 0), Echo) as server:
        server.socket.setblocking(False)
        assert plan(server).accept == "stream"
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            for _ in range(20):
                with socket.create_connection(server.server_address, timeout=5) as client:
                    client.sendall(b"ping\n")
                    assert client.makefile("rb").readline() == b"ping\n"
        finally:
            server.shutdown()
            thread.join(10)
        assert server.socket.gettimeout() == 0.0  # the user's choice is kept


def test_the_c_accept_path_sets_tcp_nodelay_only_for_tcp(fs):
    with fs.TCPServer(("127.0.0.1", 0), fs.BaseRequestHandler) as server:
        assert plan(server).tcp_nodelay
        server.tcp_nodelay = False
        assert not plan(server).tcp_nodelay
    if hasattr(socket, "AF_UNIX"):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "s")
            with fs.UnixStreamServer(path, fs.BaseRequestHandler) as server:
                assert not plan(server).tcp_nodelay


def test_overridden_handle_request_noblock_replaces_the_chain(fs):
    with fs.TCPServer(("127.0.0.1", 0), fs.BaseRequestHandler) as server:
        server._handle_request_noblock = lambda: None
        assert plan(server).handle_one is not None


def test_udp_max_packet_size_truncates_like_the_stdlib(ss):
    got = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            got.append(self.request[0])
            self.request[1].sendto(b"ok", self.client_address)

    class Server(ss.UDPServer):
        max_packet_size = 100

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            for size in (0, 1, 100, 101, 5000):
                client.sendto(b"a" * size, server.server_address)
                assert client.recv(16) == b"ok"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert [len(data) for data in got] == [0, 1, 100, 100, 100]


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="all of 127/8 is loopback on Linux")
def test_ipv4_client_addresses_are_formatted_like_the_socket_module(fs):
    """The core formats IPv4 addresses itself: every octet width, and 0."""
    sources = ["127.0.0.1", "127.9.10.99", "127.100.255.0", "127.255.254.1", "127.1.0.10"]
    seen = []

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            seen.append(self.client_address)

    server = fs.TCPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    expected = []
    try:
        for source in sources:
            with socket.socket() as client:
                client.bind((source, 0))
                client.settimeout(5)
                client.connect(server.server_address)
                expected.append(client.getsockname())
                client.recv(1)  # EOF once the handler is done
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert seen == expected


def test_accepted_socket_is_a_complete_socket(fs):
    """What the core builds behaves as socket.accept()'s socket in every way
    a handler can see: slots, repr, makefile, dup, close."""
    if fs is fastserver and _engine.core is _engine.compiled_core:
        assert _engine.compiled_core.FAST_SOCKET_CONSTRUCTION
    seen = {}

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            sock = self.request
            seen["slots"] = (sock._io_refs, sock._closed)
            seen["repr"] = repr(sock).startswith("<socket.socket fd=")
            seen["peer"] = sock.getpeername() == self.client_address
            with sock.makefile("rb") as rfile:
                seen["line"] = rfile.readline()
            with sock.dup() as twin:
                seen["dup"] = twin.family == sock.family and twin.fileno() != sock.fileno()
            sock.sendall(b"ok")
            seen["fd"] = sock.fileno()

    server = fs.TCPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"hello\n")
            assert client.recv(16) == b"ok"
            assert client.recv(16) == b""  # closed by shutdown_request
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert seen["slots"] == (0, False) and seen["repr"] and seen["peer"] and seen["dup"]
    assert seen["line"] == b"hello\n"
    with pytest.raises(OSError):
        os.fstat(seen["fd"])  # really closed


#: The hook is installed before anything is imported; CHILD_IMPORT binds
#: ``ss`` to the variant the child's environment names.
AUDIT_CHILD = r"""
import sys
events = []
sys.addaudithook(lambda event, args: events.append(args[1:]) if event == "socket.__new__" else None)
""" + variants.CHILD_IMPORT + r"""
import socket, threading
server = ss.TCPServer(("127.0.0.1", 0), ss.BaseRequestHandler)
thread = threading.Thread(target=server.serve_forever, args=(0.05,))
thread.start()
events.clear()
for _ in range(3):
    with socket.create_connection(server.server_address) as client:
        client.recv(1)
server.shutdown(); thread.join(); server.server_close()
print(len(events), sorted(set(events)))
"""


def test_accepted_sockets_raise_the_audit_event_like_the_stdlib():
    import subprocess
    import sys

    outputs = {}
    for variant in filter(variants.available, variants.REFERENCE_AND_NATIVE):
        result = subprocess.run([sys.executable, "-c", AUDIT_CHILD],
                                env=variants.child_env(variant),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        outputs[variant] = result.stdout
    # The clients' own sockets count too: 3 clients + 3 accepted sockets.
    assert len(set(outputs.values())) == 1, outputs
    assert outputs["stdlib"].startswith("6 ")
