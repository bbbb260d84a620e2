"""Limits against hostile or stuck clients, and the graceful drain.

- ``StreamRequestHandler.max_line_length``: readline() with no size stops
  at the limit with LineTooLong (the bytes read are on the exception);
- ``TCPServer.idle_timeout``: each accepted socket's timeout;
- ``TCPServer.max_connections`` with ``overload`` "wait" or "refuse";
- ``BaseServer.shutdown(timeout=...)`` / ``drain()``.

Every test runs on the compiled core (epoll and poll) and on the twin, and
the C path and the Python path (an overridden get_request) where they differ.
"""
import resource
import socket
import threading
import time

import pytest

import fastserver
from fastserver import _streams

import util
import variants
from util import HOST, TIMEOUT, background_server, open_fds, recv_until_eof, tcp_connect, wait_until

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------
# max_line_length: the readers
# ---------------------------------------------------------------------------

def compiled_reader(sock, limit):
    return variants.core("c").SocketReader(sock, -1, limit)


def python_reader(sock, limit):
    return _streams.open_reader(sock, -1, limit)


#: Each core's reader, by the core's name (the tests' ids).
READERS = {"c": compiled_reader, "py": python_reader}


@pytest.fixture(params=variants.CORES)
def open_reader(request):
    variants.core(request.param)  # skips where that core cannot run
    return READERS[request.param]


def test_readline_stops_at_the_limit_and_keeps_the_bytes(open_reader):
    a, b = socket.socketpair()
    with a, b:
        reader = open_reader(a, 8)
        b.sendall(b"short\n0123456789\n1234567\nxy")
        b.shutdown(socket.SHUT_WR)
        assert reader.readline() == b"short\n"
        with pytest.raises(fastserver.LineTooLong) as caught:
            reader.readline()
        assert isinstance(caught.value, ValueError)
        assert caught.value.data == b"01234567" and caught.value.limit == 8
        assert reader.readline() == b"89\n"  # the rest of the long line
        assert reader.readline() == b"1234567\n"  # exactly the limit, newline included
        assert reader.readline() == b"xy"  # EOF before the limit: a short last line
        assert reader.readline() == b""
        reader.close()


def test_an_explicit_size_is_obeyed_beyond_the_limit(open_reader):
    a, b = socket.socketpair()
    with a, b:
        reader = open_reader(a, 4)
        b.sendall(b"0123456789\n" * 2)
        assert reader.readline(100) == b"0123456789\n"
        assert reader.readline(3) == b"012"
        reader.close()


def test_iteration_and_readlines_obey_the_limit(open_reader):
    a, b = socket.socketpair()
    with a, b:
        reader = open_reader(a, 4)
        b.sendall(b"ab\ncd\nefghij\n")
        lines = iter(reader)
        assert next(lines) == b"ab\n"
        assert next(lines) == b"cd\n"
        with pytest.raises(fastserver.LineTooLong):
            next(lines)
        reader.close()
    a, b = socket.socketpair()
    with a, b:
        reader = open_reader(a, 4)
        b.sendall(b"ab\nefghij\n")
        with pytest.raises(fastserver.LineTooLong):
            reader.readlines()
        reader.close()


def test_no_limit_is_the_stdlib_reader(open_reader):
    a, b = socket.socketpair()
    with a, b:
        reader = open_reader(a, None)
        sender = threading.Thread(target=b.sendall, args=(b"x" * 300_000 + b"\n",))
        sender.start()
        assert len(reader.readline()) == 300_001
        sender.join(TIMEOUT)
        reader.close()


def test_a_limit_must_be_positive(open_reader):
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError):
            open_reader(a, 0)


def test_the_default_limit_reaches_the_handler(fs):
    """A client that sends a long line without a newline: the handler gets
    LineTooLong (handle_error by default), the server goes on."""
    assert fs.StreamRequestHandler.max_line_length == 65536
    outcomes = []

    class Handler(fs.StreamRequestHandler):
        def handle(self):
            try:
                line = self.rfile.readline()
            except fastserver.LineTooLong as exc:
                outcomes.append(("too long", len(exc.data)))
                self.wfile.write(b"ERR line too long\n")
                return
            outcomes.append(("line", len(line)))
            self.wfile.write(b"OK\n")

    with fs.TCPServer((HOST, 0), Handler) as server, background_server(server, close=False):
        with tcp_connect(server.server_address) as client:
            try:
                client.sendall(b"x" * (1 << 20))  # 1 MiB, no newline
            except OSError:
                pass  # the server may close before reading it all
            assert recv_until_eof(client) == b"ERR line too long\n"
        assert util.tcp_roundtrip(server.server_address, b"fine\n") == b"OK\n"
    assert outcomes == [("too long", 65536), ("line", 5)]


def test_a_handler_can_lift_the_limit(fs):
    class Handler(fs.StreamRequestHandler):
        max_line_length = None

        def handle(self):
            self.wfile.write(b"%d\n" % len(self.rfile.readline()))

    with fs.TCPServer((HOST, 0), Handler) as server, background_server(server, close=False):
        assert util.tcp_roundtrip(server.server_address, b"y" * 200_000 + b"\n") == b"200001\n"


# ---------------------------------------------------------------------------
# idle_timeout
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["core", "get_request override"])
def test_idle_timeout_frees_a_silent_connection(fs, path):
    seen = []

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            seen.append(self.request.gettimeout())
            try:
                self.request.recv(10)
            except TimeoutError:
                seen.append("timed out")

    class Server(fs.TCPServer):
        idle_timeout = 0.2
        if path != "core":
            def get_request(self):
                return super().get_request()

    with Server((HOST, 0), Handler) as server, background_server(server, close=False):
        with tcp_connect(server.server_address) as silent:
            assert recv_until_eof(silent) == b""  # closed by the server
    assert seen == [0.2, "timed out"]


def test_a_handler_timeout_overrides_idle_timeout(fs):
    seen = []

    class Handler(fs.StreamRequestHandler):
        timeout = 3.0

        def handle(self):
            seen.append(self.connection.gettimeout())

    class Server(fs.TCPServer):
        idle_timeout = 0.2

    with Server((HOST, 0), Handler) as server, background_server(server, close=False):
        util.tcp_roundtrip(server.server_address, b"")
    assert seen == [3.0]


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft, hard
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return soft, hard


SLOWLORIS = 1000


def test_slowloris_does_not_stop_a_well_behaved_client(fs):
    """1,000 connections that send one byte and then nothing (as slowly as
    one byte a minute) against a threading server with idle_timeout: a
    normal client is served at once, and the slow ones are dropped."""
    old_limit = raise_fd_limit(2 * SLOWLORIS + 256)

    class Echo(fs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    class Server(fs.ThreadingTCPServer):
        idle_timeout = 1.0
        request_queue_size = 128
        daemon_threads = True
        block_on_close = False

        def handle_error(self, request, client_address):
            pass  # 1,000 timeouts: the default's 1,000 log lines say nothing new

    slow = []
    try:
        with Server((HOST, 0), Echo) as server, background_server(server, close=False):
            for _ in range(SLOWLORIS):
                sock = socket.create_connection(server.server_address, timeout=TIMEOUT)
                sock.sendall(b"G")
                slow.append(sock)
            started = time.monotonic()
            assert util.tcp_roundtrip(server.server_address, b"hello\n") == b"hello\n"
            served_after = time.monotonic() - started
            # The slow connections are closed by the server (EOF to the client).
            for sock in slow[:20]:
                assert recv_until_eof(sock) == b""
        assert served_after < 5.0, served_after  # a bound on a loaded machine, not a speed test
    finally:
        for sock in slow:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, old_limit)


# ---------------------------------------------------------------------------
# max_connections
# ---------------------------------------------------------------------------

class Holding:
    """A threading server whose handlers reply once released."""

    def __init__(self, fs, **attributes):
        self.release = threading.Event()
        self.started = []
        self.overloaded = []
        release, started, overloaded = self.release, self.started, self.overloaded

        class Handler(fs.StreamRequestHandler):
            def handle(self):
                name = self.rfile.readline().strip()
                started.append(name)
                release.wait(TIMEOUT)
                self.wfile.write(b"done " + name + b"\n")

        class Server(fs.ThreadingTCPServer):
            def handle_overload(self, request, client_address):
                overloaded.append(client_address)
                super().handle_overload(request, client_address)

        for name, value in attributes.items():
            setattr(Server, name, value)
        self.server = Server((HOST, 0), Handler)


def send_named(address, name):
    sock = tcp_connect(address)
    sock.sendall(name + b"\n")
    return sock


@pytest.mark.parametrize("path", ["core", "get_request override"])
def test_max_connections_wait_keeps_new_clients_in_the_backlog(fs, path):
    holding = Holding(fs, max_connections=2, overload="wait")
    if path != "core":
        holding.server.get_request = lambda: fs.TCPServer.get_request(holding.server)
    with holding.server as server, background_server(server, close=False):
        first = [send_named(server.server_address, b"a%d" % i) for i in range(2)]
        wait_until(lambda: len(holding.started) == 2)
        late = send_named(server.server_address, b"late")  # connects: the kernel's backlog
        time.sleep(0.3)
        assert len(holding.started) == 2, "a third connection was served beyond max_connections"
        assert fastserver._engine.connections_of(server).__len__() == 2
        holding.release.set()
        replies = sorted(recv_until_eof(s) for s in first + [late])
        assert replies == [b"done a0\n", b"done a1\n", b"done late\n"]
        for s in first + [late]:
            s.close()
    assert holding.overloaded == []


@pytest.mark.parametrize("path", ["core", "get_request override"])
def test_max_connections_refuse_closes_the_extra_connection(fs, path):
    holding = Holding(fs, max_connections=1, overload="refuse")
    if path != "core":
        holding.server.get_request = lambda: fs.TCPServer.get_request(holding.server)
    with holding.server as server, background_server(server, close=False):
        first = send_named(server.server_address, b"first")
        wait_until(lambda: len(holding.started) == 1)
        with tcp_connect(server.server_address) as refused:
            assert recv_until_eof(refused) == b""  # closed at once
        assert len(holding.overloaded) == 1
        holding.release.set()
        assert recv_until_eof(first) == b"done first\n"
        first.close()
        # Room again: the next one is served.
        wait_until(lambda: len(fastserver._engine.connections_of(server)) == 0)
        holding.release.set()
        assert util.tcp_roundtrip(server.server_address, b"next\n") == b"done next\n"


def test_connections_are_counted_until_closed_and_nothing_leaks(fs):
    class Echo(fs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    before = open_fds()
    with fs.ThreadingTCPServer((HOST, 0), Echo) as server, background_server(server, close=False):
        for i in range(50):
            assert util.tcp_roundtrip(server.server_address, b"%d\n" % i) == b"%d\n" % i
        connections = fastserver._engine.connections_of(server)
        wait_until(lambda: len(connections) == 0)
    assert open_fds() == before


def test_connections_closed_elsewhere_are_pruned(fs, monkeypatch):
    """A server that hands connections off (close_request does nothing,
    other code closes them later) must not keep them alive in the registry."""
    kept = []

    class Server(fs.TCPServer):
        def shutdown_request(self, request):
            kept.append(request)

    # Prune early, for the test (the loop reads the threshold when it starts).
    monkeypatch.setattr(fastserver.connections.OpenConnections, "PRUNE_MIN", 8)
    with Server((HOST, 0), fs.BaseRequestHandler) as server, background_server(server, close=False):
        registry = fastserver._engine.connections_of(server)
        for _ in range(40):
            with tcp_connect(server.server_address):
                pass
            wait_until(lambda: kept)
            kept.pop().close()
        assert len(registry) <= 16


# ---------------------------------------------------------------------------
# Graceful drain: shutdown(timeout=...)
# ---------------------------------------------------------------------------

def test_drain_lets_requests_in_flight_finish(fs):
    release = threading.Event()

    class Slow(fs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            release.wait(TIMEOUT)
            time.sleep(0.2)
            self.wfile.write(b"complete\n")

    server = fs.ThreadingTCPServer((HOST, 0), Slow)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        client = send_named(server.server_address, b"x")
        wait_until(lambda: len(fastserver._engine.connections_of(server)) == 1)
        release.set()
        server.shutdown(timeout=5.0)  # the request ends well within it
        assert recv_until_eof(client) == b"complete\n"
        client.close()
        # New connections are no longer served: the loop has stopped.
        assert not thread.is_alive() or thread.join(TIMEOUT) is None
    finally:
        server.server_close()


def test_drain_cuts_what_is_still_open_at_the_deadline(fs):
    outcomes = []

    class Stuck(fs.StreamRequestHandler):
        def handle(self):
            outcomes.append(self.rfile.readline())  # the client never sends a line

    server = fs.ThreadingTCPServer((HOST, 0), Stuck)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with tcp_connect(server.server_address) as client:
            wait_until(lambda: len(fastserver._engine.connections_of(server)) == 1)
            started = time.monotonic()
            server.shutdown(timeout=0.5)
            elapsed = time.monotonic() - started
            assert 0.45 <= elapsed < TIMEOUT
            wait_until(lambda: outcomes == [b""])  # the handler saw EOF and ended
            assert recv_until_eof(client) == b""
    finally:
        server.server_close()


def test_drain_on_a_synchronous_server_cuts_the_request_in_the_loop(fs):
    class Stuck(fs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()

    server = fs.TCPServer((HOST, 0), Stuck)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with tcp_connect(server.server_address):
            wait_until(lambda: len(fastserver._engine.connections_of(server)) == 1)
            server.shutdown(timeout=0.3)
            thread.join(TIMEOUT)
            assert not thread.is_alive()
    finally:
        server.server_close()


def test_shutdown_without_timeout_is_the_stdlib_one(fs):
    server = fs.TCPServer((HOST, 0), fs.BaseRequestHandler)
    with background_server(server):
        pass
    assert fs.TCPServer.drain(server, 0) == 0
