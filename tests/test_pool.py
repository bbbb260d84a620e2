"""ThreadPoolMixIn: a bounded pool of reusable worker threads with
ThreadingMixIn's hooks.  Real sockets on loopback, every fastserver core."""
import functools
import gc
import http.client
import http.server
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from fastserver import pool as pool_module
from fastserver.pool import ThreadPoolMixIn, ThreadPoolTCPServer, ThreadPoolUDPServer

import util
import variants
from util import open_fds

HOST = util.HOST
TIMEOUT = util.TIMEOUT
HAS_UNIX = hasattr(socket, "AF_UNIX")
needs_unix = pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")


def upper_handler(fs, datagram=False):
    """A handler of ``fs`` that replies with the request's first line in
    upper case, through rfile/wfile (a stream's or a datagram's)."""
    base = fs.DatagramRequestHandler if datagram else fs.StreamRequestHandler

    class Upper(base):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())

    return Upper


def pool_server(fs, base=ThreadPoolTCPServer, handler=None, address=(HOST, 0), **attrs):
    """A server of a subclass of ``base`` with class attributes ``attrs``
    (``upper_handler(fs)`` unless another handler is given)."""
    server_class = type("Server", (base,), dict(attrs))
    return server_class(address, handler or upper_handler(fs))


class Gate:
    """Handlers wait at the gate until the test opens it; ``inside`` counts
    the handlers that reached it."""

    def __init__(self):
        self.opened = threading.Event()
        self.inside = 0
        self._lock = threading.Lock()

    def wait(self):
        with self._lock:
            self.inside += 1
        assert self.opened.wait(TIMEOUT), "the test never opened the gate"

    def open(self):
        self.opened.set()


def gated_handler(fs, gate, reply=b"ok"):
    class Handler(fs.BaseRequestHandler):
        def handle(self):
            gate.wait()
            self.request.sendall(reply)

    return Handler


def connect_and_wait_accepted(server, accepted, count):
    """Connect one client and wait until the server took it (``accepted()``
    reaches ``count``), so that clients are accepted in a known order."""
    client = util.tcp_connect(server.server_address)
    assert util.wait_until(lambda: accepted() >= count), "the server did not accept"
    return client


# ---------------------------------------------------------------------------
# The predefined classes
# ---------------------------------------------------------------------------

def test_pool_status_before_the_first_request(fs):
    with pool_server(fs) as server:
        assert server.overload == "wait"
        assert server.daemon_threads is False and server.block_on_close is True
        status = server.pool_status()
        assert status == (0, 0, 0, 0, pool_module.DEFAULT_MAX_WORKERS,
                          4 * pool_module.DEFAULT_MAX_WORKERS)
        assert min(32, (os.cpu_count() or 1) + 4) == pool_module.DEFAULT_MAX_WORKERS


def test_tcp_echo(fs):
    server = pool_server(fs, max_workers=3)
    with util.background_server(server):
        for i in range(10):
            assert util.tcp_roundtrip(server.server_address, b"hello %d\n" % i) == b"HELLO %d\n" % i
        assert 1 <= server.pool_status().workers <= 3


def test_udp_echo(fs):
    server = pool_server(fs, ThreadPoolUDPServer, upper_handler(fs, datagram=True),
                         max_workers=3)
    with util.background_server(server):
        for i in range(10):
            assert util.udp_roundtrip(server.server_address, b"hello %d\n" % i) == b"HELLO %d\n" % i


@needs_unix
def test_unix_stream_echo(fs):
    from fastserver.pool import ThreadPoolUnixStreamServer

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "s")
        server = pool_server(fs, ThreadPoolUnixStreamServer, address=path)
        with util.background_server(server):
            for i in range(10):
                assert util.unix_stream_roundtrip(path, b"hi %d\n" % i) == b"HI %d\n" % i


@needs_unix
def test_unix_datagram_echo(fs):
    from fastserver.pool import ThreadPoolUnixDatagramServer

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "s")
        server = pool_server(fs, ThreadPoolUnixDatagramServer, upper_handler(fs, datagram=True),
                             address=path)
        with util.background_server(server):
            for i in range(5):
                client_path = os.path.join(tmp, "c%d" % i)
                reply = util.unix_dgram_roundtrip(path, b"hi %d\n" % i, client_path)
                assert reply == b"HI %d\n" % i


def test_all_names():
    expected = {"ThreadPoolMixIn", "ThreadPoolStatus", "ThreadPoolTCPServer", "ThreadPoolUDPServer"}
    if HAS_UNIX:
        expected |= {"ThreadPoolUnixStreamServer", "ThreadPoolUnixDatagramServer"}
    assert set(pool_module.__all__) == expected
    for name in pool_module.__all__:
        assert hasattr(pool_module, name)
    # Mix-in first, like the stdlib's Threading* servers.
    assert ThreadPoolTCPServer.__mro__[1] is ThreadPoolMixIn


def fastserver_http_server(fs):
    """http.server.HTTPServer's code on fastserver's TCPServer."""

    class HTTPServer(fs.TCPServer):
        allow_reuse_address = http.server.HTTPServer.allow_reuse_address
        server_bind = http.server.HTTPServer.server_bind

    return HTTPServer


@pytest.mark.parametrize("http_base", ["http.server", "fastserver"])
def test_http_server_handler(fs, tmp_path, http_base):
    (tmp_path / "hello.txt").write_bytes(b"hello from the pool\n")

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    base = http.server.HTTPServer if http_base == "http.server" else fastserver_http_server(fs)

    class Server(ThreadPoolMixIn, base):
        max_workers = 4

    server = Server((HOST, 0), functools.partial(QuietHandler, directory=str(tmp_path)))
    url = "http://%s:%d/hello.txt" % server.server_address[:2]
    bodies = []

    def fetch():
        for _ in range(5):
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                bodies.append(response.read())

    with util.background_server(server):
        fetchers = [threading.Thread(target=fetch) for _ in range(4)]
        for fetcher in fetchers:
            fetcher.start()
        for fetcher in fetchers:
            fetcher.join(TIMEOUT)
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=TIMEOUT)
        connection.request("GET", "/missing")
        assert connection.getresponse().status == 404
        connection.close()
    assert bodies == [b"hello from the pool\n"] * 20
    assert server.pool_status().workers == 0  # server_close() ended them


# ---------------------------------------------------------------------------
# Same hooks, same order, same threads as ThreadingMixIn
# ---------------------------------------------------------------------------

def record_hooks(mixin, tcp_server, base_handler):
    """A server class and a handler class that log (hook, thread role)."""
    log = []
    loop_thread = threading.current_thread()

    def note(name):
        log.append((name, "loop" if threading.current_thread() is loop_thread else "worker"))

    class Handler(base_handler):
        def setup(self):
            note("setup")
            super().setup()

        def handle(self):
            note("handle")
            if self.rfile.readline() == b"fail\n":
                raise ValueError("the handler failed")
            self.wfile.write(b"ok")

        def finish(self):
            note("finish")
            super().finish()

    class Server(mixin, tcp_server):
        def verify_request(self, request, client_address):
            note("verify_request")
            return super().verify_request(request, client_address)

        def process_request(self, request, client_address):
            note("process_request")
            return super().process_request(request, client_address)

        def process_request_thread(self, request, client_address):
            note("process_request_thread")
            return super().process_request_thread(request, client_address)

        def finish_request(self, request, client_address):
            note("finish_request")
            return super().finish_request(request, client_address)

        def handle_error(self, request, client_address):
            note("handle_error")

        def shutdown_request(self, request):
            note("shutdown_request")
            return super().shutdown_request(request)

        def close_request(self, request):
            note("close_request")
            return super().close_request(request)

    return Server, Handler, log


def hooks_of_one_request(mixin, tcp_server, base_handler, line):
    Server, Handler, log = record_hooks(mixin, tcp_server, base_handler)
    with Server((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address) as client:
            client.sendall(line)
            server.handle_request()
            util.recv_until_eof(client)
    # Leaving the with block ran server_close(), which joined the worker.
    return log


@pytest.mark.parametrize("line", [b"hello\n", b"fail\n"])
def test_hook_order_equals_threading_mixin(fs, line):
    pooled = hooks_of_one_request(ThreadPoolMixIn, fs.TCPServer, fs.StreamRequestHandler, line)
    threaded = hooks_of_one_request(fs.ThreadingMixIn, fs.TCPServer, fs.StreamRequestHandler, line)
    reference = hooks_of_one_request(socketserver.ThreadingMixIn, socketserver.TCPServer,
                                     socketserver.StreamRequestHandler, line)
    assert pooled == threaded == reference
    # The handler's __init__ runs finish() in a finally: before handle_error().
    expected_handler_hooks = ["finish_request", "setup", "handle", "finish"]
    if line == b"fail\n":
        expected_handler_hooks.append("handle_error")
    assert pooled == (
        [("verify_request", "loop"), ("process_request", "loop"),
         ("process_request_thread", "worker")]
        + [(name, "worker") for name in expected_handler_hooks]
        + [("shutdown_request", "worker"), ("close_request", "worker")]
    )


def test_handle_error_runs_in_the_worker_and_the_server_keeps_serving(fs):
    errors = []

    class Handler(fs.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            if line == b"boom\n":
                raise ValueError("boom")
            self.wfile.write(line.upper())

    class Server(ThreadPoolTCPServer):
        max_workers = 1

        def handle_error(self, request, client_address):
            errors.append(threading.current_thread())

    server = Server((HOST, 0), Handler)
    with util.background_server(server):
        assert util.tcp_roundtrip(server.server_address, b"boom\n") == b""
        assert util.tcp_roundtrip(server.server_address, b"next\n") == b"NEXT\n"
        assert util.tcp_roundtrip(server.server_address, b"boom\n") == b""
        assert util.tcp_roundtrip(server.server_address, b"again\n") == b"AGAIN\n"
        assert len(errors) == 2 and errors[0] is errors[1]  # the one worker, still alive
        assert errors[0].name.endswith("worker 1")
        assert server.pool_status().workers == 1


def test_an_exception_escaping_process_request_thread_does_not_kill_the_worker(fs, monkeypatch):
    """In ThreadingMixIn it would end the thread, reported by
    threading.excepthook; the pool reports it the same way, and the worker
    serves on."""
    reported = []
    monkeypatch.setattr(threading, "excepthook", reported.append)

    class Server(ThreadPoolTCPServer):
        max_workers = 1
        fail_next_shutdown = True

        def shutdown_request(self, request):
            super().shutdown_request(request)
            if self.fail_next_shutdown:
                self.fail_next_shutdown = False
                raise RuntimeError("shutdown_request failed")

    server = Server((HOST, 0), upper_handler(fs))
    with util.background_server(server):
        assert util.tcp_roundtrip(server.server_address, b"one\n") == b"ONE\n"
        assert util.wait_until(lambda: len(reported) == 1)
        assert util.tcp_roundtrip(server.server_address, b"two\n") == b"TWO\n"
        status = server.pool_status()
        assert status.workers == 1
        assert util.wait_until(lambda: server.pool_status().in_flight == 0)
    (args,) = reported
    assert args.exc_type is RuntimeError and args.thread.name.endswith("worker 1")


# ---------------------------------------------------------------------------
# Bounded and reused
# ---------------------------------------------------------------------------

def test_max_workers_bounds_the_threads_under_50_slow_clients(fs):
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    idents = set()

    class SlowClientHandler(fs.StreamRequestHandler):
        def handle(self):
            with lock:
                idents.add(threading.get_ident())
                running["now"] += 1
                running["most"] = max(running["most"], running["now"])
            try:
                self.wfile.write(self.rfile.readline().upper())  # waits for the client
            finally:
                with lock:
                    running["now"] -= 1

    class Server(ThreadPoolTCPServer):
        request_queue_size = 64
        max_queue = 64

    threads_before = threading.active_count()
    server = Server((HOST, 0), SlowClientHandler)
    server.max_workers = 4  # on the instance, before the first request
    with util.background_server(server):
        clients = [util.tcp_connect(server.server_address) for _ in range(50)]
        try:
            # All 50 accepted: 4 on workers (waiting for their client's line),
            # the rest queued.
            assert util.wait_until(lambda: server.pool_status().in_flight == 50)
            assert server.pool_status() == (4, 0, 46, 50, 4, 64)
            assert threading.active_count() == threads_before + 1 + 4  # + the loop
            for i, client in enumerate(clients):
                client.sendall(b"client %d\n" % i)
            for i, client in enumerate(clients):
                assert util.recv_until_eof(client) == b"CLIENT %d\n" % i
        finally:
            for client in clients:
                client.close()
        assert util.wait_until(lambda: server.pool_status().in_flight == 0)
        assert server.pool_status() == (4, 4, 0, 0, 4, 64)
    assert running["most"] == 4
    assert len(idents) == 4


def test_threads_are_reused(fs):
    idents = []

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            idents.append(threading.get_ident())
            self.request.sendall(b"ok")

    server = pool_server(fs, handler=Handler, max_workers=8)
    with util.background_server(server):
        for _ in range(50):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
            # Once the worker is idle again, the next request goes to it.
            assert util.wait_until(lambda: server.pool_status().idle == 1)
        assert server.pool_status().workers == 1
        # Back to back, without waiting: still no more than max_workers.
        for _ in range(100):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
        assert server.pool_status().workers <= 8
    assert len(set(idents[:50])) == 1
    assert len(set(idents)) <= 8


def test_workers_start_only_when_none_is_free(fs):
    gate = Gate()
    server = pool_server(fs, handler=gated_handler(fs, gate), max_workers=4)
    with util.background_server(server):
        clients = []
        try:
            for n in range(1, 4):
                clients.append(util.tcp_connect(server.server_address))
                assert util.wait_until(lambda n=n: gate.inside == n)
                assert server.pool_status().workers == n  # each busy: a new one
            gate.open()
            for client in clients:
                assert util.recv_until_eof(client) == b"ok"
        finally:
            gate.open()
            for client in clients:
                client.close()
        assert util.wait_until(lambda: server.pool_status().idle == 3)
        assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
        assert server.pool_status().workers == 3  # an idle one took it


# ---------------------------------------------------------------------------
# Overload
# ---------------------------------------------------------------------------

class CountingServer(ThreadPoolTCPServer):
    """Counts verify_request() (a request taken from the listener) and
    records handle_overload()."""

    max_workers = 2
    max_queue = 1
    request_queue_size = 16

    def __init__(self, *args, **kwargs):
        self.accepted = 0
        self.overloaded = []
        super().__init__(*args, **kwargs)

    def verify_request(self, request, client_address):
        self.accepted += 1
        return True

    def handle_overload(self, request, client_address):
        self.overloaded.append(client_address)
        super().handle_overload(request, client_address)


def test_overload_wait_stops_accepting_and_loses_nobody(fs):
    gate = Gate()
    server = CountingServer((HOST, 0), gated_handler(fs, gate))
    assert server.overload == "wait"
    with util.background_server(server):
        clients = []
        try:
            for n in range(1, 4):
                clients.append(connect_and_wait_accepted(server, lambda: server.accepted, n))
            assert util.wait_until(lambda: gate.inside == 2)
            assert server.pool_status() == (2, 0, 1, 3, 2, 1)
            # The 4th is accepted and waits for room in process_request():
            # the loop takes no more, the 5th and 6th wait in the backlog.
            clients += [util.tcp_connect(server.server_address) for _ in range(3)]
            assert util.wait_until(lambda: server.accepted == 4)
            time.sleep(0.2)
            assert server.accepted == 4
            assert server.pool_status().in_flight == 3
            gate.open()
            for client in clients:
                assert util.recv_until_eof(client) == b"ok"
        finally:
            gate.open()
            for client in clients:
                client.close()
    assert server.accepted == 6
    assert server.overloaded == []


def test_overload_refuse_closes_the_connection_at_once(fs):
    gate = Gate()
    server = CountingServer((HOST, 0), gated_handler(fs, gate))
    server.overload = "refuse"
    with util.background_server(server):
        served, refused = [], []
        try:
            for n in range(1, 4):
                served.append(connect_and_wait_accepted(server, lambda: server.accepted, n))
            for n in range(4, 7):
                refused.append(connect_and_wait_accepted(server, lambda: server.accepted, n))
            # The gate is still shut: the refused clients are told now.
            for client in refused:
                try:
                    assert client.recv(100) == b""
                except ConnectionResetError:
                    pass
            assert server.overloaded == [client.getsockname() for client in refused]
            assert server.pool_status().in_flight == 3
            gate.open()
            for client in served:
                assert util.recv_until_eof(client) == b"ok"
        finally:
            gate.open()
            for client in served + refused:
                client.close()


def test_overload_refuse_drops_datagrams(fs):
    gate = Gate()

    class Handler(fs.DatagramRequestHandler):
        def handle(self):
            gate.wait()
            self.wfile.write(self.rfile.read().upper())

    class Server(ThreadPoolUDPServer):
        max_workers = 1
        max_queue = 0
        overload = "refuse"
        dropped = 0

        def handle_overload(self, request, client_address):
            data, _ = request
            assert data in (b"second", b"third")
            self.dropped += 1
            super().handle_overload(request, client_address)

    server = Server((HOST, 0), Handler)
    with util.background_server(server), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        client.sendto(b"first", server.server_address)
        assert util.wait_until(lambda: gate.inside == 1)
        client.sendto(b"second", server.server_address)
        client.sendto(b"third", server.server_address)
        assert util.wait_until(lambda: server.dropped == 2)
        gate.open()
        assert client.recv(100) == b"FIRST"
        assert util.wait_until(lambda: server.pool_status().in_flight == 0)


def test_shutdown_does_not_wait_for_room(fs):
    """With "wait", shutdown() refuses the request the loop holds instead
    of waiting for a busy worker."""
    gate = Gate()
    server = CountingServer((HOST, 0), gated_handler(fs, gate))
    server.max_workers, server.max_queue = 1, 0
    loop = util.ThreadCall(server.serve_forever, poll_interval=0.05)
    clients = []
    try:
        clients.append(connect_and_wait_accepted(server, lambda: server.accepted, 1))
        clients.append(connect_and_wait_accepted(server, lambda: server.accepted, 2))
        assert util.wait_until(lambda: gate.inside == 1)
        stopper = util.ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT) and loop.join(TIMEOUT), "shutdown() waited for the worker"
        assert stopper.exc is None and loop.exc is None
        assert not gate.opened.is_set()
        assert server.overloaded == [clients[1].getsockname()]
        assert util.recv_until_eof(clients[1]) == b""
        gate.open()
        assert util.recv_until_eof(clients[0]) == b"ok"
        # A later loop waits for room again.
        loop = util.ThreadCall(server.serve_forever, poll_interval=0.05)
        assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
    finally:
        gate.open()
        if not loop.done:
            server.shutdown()
        loop.join(TIMEOUT)
        server.server_close()
        for client in clients:
            client.close()


BAD_POOL_SETTINGS = [
    ("overload", "drop", ValueError),
    ("max_workers", 0, ValueError),
    ("max_queue", -1, ValueError),
    ("max_workers", 2.5, TypeError),
]


def test_bad_settings_are_refused_where_the_class_is_defined(fs):
    for name, value, error in BAD_POOL_SETTINGS:
        with pytest.raises(error, match=r"^Server\.%s must be .*, not %r$" % (name, value)):
            pool_server(fs, **{name: value})


def test_bad_settings_set_after_construction_are_refused_before_the_first_request(fs):
    """The limits may be set on the instance until the pool starts: a bad
    one fails there (and in pool_status()), naming the setting."""
    for name, value, error in BAD_POOL_SETTINGS:
        with pool_server(fs) as server:
            setattr(server, name, value)
            message = r"^Server\.%s must be" % name
            left, right = socket.socketpair()
            with left, right:
                with pytest.raises(error, match=message):
                    server.process_request(left, "client")
            if name != "overload":
                with pytest.raises(error, match=message):
                    server.pool_status()


# ---------------------------------------------------------------------------
# server_close(), daemon_threads, block_on_close
# ---------------------------------------------------------------------------

def start_queued_requests(fs, server_attrs, count):
    """A one-worker server with ``count`` requests in it, the first running
    (held at the gate), the rest queued; its loop already stopped."""
    gate = Gate()
    served = []

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            gate.wait()
            self.request.sendall(b"ok")
            served.append(threading.current_thread())

    server = pool_server(fs, handler=Handler, max_workers=1, max_queue=8, **server_attrs)
    clients = []
    with util.background_server(server, close=False):
        clients = [util.tcp_connect(server.server_address) for _ in range(count)]
        assert util.wait_until(lambda: server.pool_status().in_flight == count)
    assert server.pool_status().queued == count - 1
    return server, gate, served, clients


def test_server_close_drains_the_queue_and_joins_the_workers(fs):
    server, gate, served, clients = start_queued_requests(fs, {}, 4)
    try:
        closer = util.ThreadCall(server.server_close)
        assert not closer.join(0.2), "server_close() did not wait for the requests"
        gate.open()
        assert closer.join(TIMEOUT) and closer.exc is None
        assert len(served) == 4  # every queued request ran before it returned
        assert not served[0].is_alive()  # and the worker was joined
        assert server.pool_status().workers == 0
        for client in clients:
            assert util.recv_until_eof(client) == b"ok"
    finally:
        gate.open()
        for client in clients:
            client.close()


def test_server_close_without_block_on_close_does_not_wait(fs):
    server, gate, served, clients = start_queued_requests(fs, {"block_on_close": False}, 4)
    try:
        closer = util.ThreadCall(server.server_close)
        assert closer.join(TIMEOUT), "server_close() waited"
        assert served == []
        gate.open()
        # The queued requests still run, then the worker exits by itself.
        for client in clients:
            assert util.recv_until_eof(client) == b"ok"
        assert util.wait_until(lambda: server.pool_status().workers == 0)
        assert util.wait_until(lambda: not served[0].is_alive())
    finally:
        gate.open()
        for client in clients:
            client.close()


@pytest.mark.parametrize("daemon", [False, True])
def test_daemon_threads(fs, daemon):
    seen = []

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            seen.append(threading.current_thread().daemon)

    server = pool_server(fs, handler=Handler)
    server.daemon_threads = daemon
    with server:
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            util.recv_until_eof(client)
    assert seen == [daemon]


def test_daemon_workers_are_not_joined_by_server_close(fs):
    """As ThreadingMixIn: server_close() does not wait for daemon threads,
    even with block_on_close."""
    server, gate, served, clients = start_queued_requests(fs, {"daemon_threads": True}, 2)
    try:
        closer = util.ThreadCall(server.server_close)
        assert closer.join(TIMEOUT), "server_close() waited for a daemon worker"
        assert served == []
        gate.open()
        assert util.wait_until(lambda: len(served) == 2)
    finally:
        gate.open()
        for client in clients:
            client.close()


@pytest.mark.parametrize("started", [False, True], ids=["no-pool-yet", "pool-started"])
def test_process_request_after_server_close_is_refused(fs, started):
    refused = []

    class Server(ThreadPoolTCPServer):
        def handle_overload(self, request, client_address):
            refused.append(client_address)
            super().handle_overload(request, client_address)

    server = Server((HOST, 0), upper_handler(fs))
    if started:
        with util.background_server(server, close=False):
            assert util.tcp_roundtrip(server.server_address, b"x\n") == b"X\n"
    server.server_close()
    left, right = socket.socketpair()
    with left, right:
        late = util.ThreadCall(server.process_request, left, "late client")
        assert late.join(TIMEOUT) and late.exc is None
        assert refused == ["late client"]
        assert right.recv(10) == b""  # closed through shutdown_request()
    assert server.pool_status().workers == 0


def test_a_handler_may_close_its_own_server(fs):
    class Handler(fs.BaseRequestHandler):
        def handle(self):
            self.server.server_close()  # must not try to join its own thread
            self.request.sendall(b"closed")

    server = pool_server(fs, handler=Handler)
    with util.tcp_connect(server.server_address) as client:
        server.handle_request()
        assert util.recv_until_eof(client) == b"closed"
    assert util.wait_until(lambda: server.pool_status().workers == 0)


def test_no_fd_or_thread_leak(fs):
    gc.collect()  # sockets an earlier test left to the collector
    fds_before = open_fds()
    threads_before = threading.active_count()
    server = pool_server(fs, max_workers=4)
    with util.background_server(server):
        for _ in range(5):
            clients = [util.tcp_connect(server.server_address) for _ in range(6)]
            for client in clients:
                with client:
                    client.sendall(b"x\n")
                    assert util.recv_until_eof(client) == b"X\n"
    assert server.pool_status() == (0, 0, 0, 0, 4, 16)
    assert threading.active_count() == threads_before
    assert open_fds() == fds_before


def test_idle_workers_use_no_cpu(fs):
    gate = Gate()
    server = pool_server(fs, handler=gated_handler(fs, gate), max_workers=8)
    threads_before = set(threading.enumerate())
    with util.background_server(server, poll_interval=0.5):
        clients = [util.tcp_connect(server.server_address) for _ in range(8)]
        try:
            assert util.wait_until(lambda: gate.inside == 8)
            gate.open()
            for client in clients:
                assert util.recv_until_eof(client) == b"ok"
        finally:
            gate.open()
            for client in clients:
                client.close()
        assert util.wait_until(lambda: server.pool_status().idle == 8)
        # The server's threads alone (what this test started): the loop and
        # the eight workers, not the test's own client code.
        server_threads = set(threading.enumerate()) - threads_before
        assert len(server_threads) == 1 + 8, server_threads
        with util.ThreadsCPU(server_threads) as cpu:
            cpu_before = cpu.seconds()
            time.sleep(1.0)
            idle_cpu = cpu.seconds() - cpu_before
        assert server.pool_status().workers == 8
    # Eight idle workers and an idle loop: a few wake-ups of the loop at most.
    assert idle_cpu < 0.05, "the loop and 8 idle workers used %.3f s of CPU in 1 s" % idle_cpu


def test_the_interpreter_exits_without_server_close(fs, variant):
    """Idle non-daemon workers wait for work for ever; they must not keep
    a program that forgot server_close() from ending."""
    script = variants.CHILD_IMPORT + """
import socket
from fastserver.pool import ThreadPoolTCPServer

class Handler(ss.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"ok")

server = ThreadPoolTCPServer(("127.0.0.1", 0), Handler)
with socket.create_connection(server.server_address) as client:
    server.handle_request()
    assert client.recv(10) == b"ok"
print(server.pool_status().workers, server.daemon_threads)
"""
    result = subprocess.run([sys.executable, "-c", script], env=variants.child_env(variant),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]


# ---------------------------------------------------------------------------
# fork
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_a_forked_child_gets_a_fresh_pool(fs):
    class Handler(fs.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"%d %d" % (os.getpid(), threading.get_ident()))

    server = pool_server(fs, handler=Handler)
    try:
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            parent_reply = util.recv_until_eof(client)
        parent_pool = server._fastserver_thread_pool
        assert server.pool_status().workers == 1

        pid = os.fork()
        if pid == 0:  # the child: serve one request on its own pool, then leave
            status = 1
            try:
                fresh_before = server.pool_status() == (0, 0, 0, 0) + server.pool_status()[4:]
                server.handle_request()
                own_pool = server._fastserver_thread_pool is not parent_pool
                one_worker = server.pool_status().workers == 1
                server.server_close()
                status = 0 if (fresh_before and own_pool and one_worker) else 3
            finally:
                os._exit(status)

        with util.tcp_connect(server.server_address) as client:
            child_reply = util.recv_until_eof(client)
        _, wait_status = os.waitpid(pid, 0)
        assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0
        assert child_reply.split()[0] == b"%d" % pid

        # The parent's pool is untouched: the same worker serves.
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            assert util.recv_until_eof(client) == parent_reply
        assert server._fastserver_thread_pool is parent_pool
    finally:
        server.server_close()
