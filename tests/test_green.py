"""Green handlers (fastserver.green): each connection in a greenlet of the
serve loop, with the hooks, the socket and the limits of ThreadingMixIn.

The ``green`` fixture runs each test on the compiled core with its native
poller (edge-triggered epoll/kqueue) and with poll(2) (armed per wait); the
pure-Python core refuses green servers at construction, which is tested
too.  Skipped where greenlet is not installed (free-threaded CPython, on
which greenlet does not build).
"""
import http.client
import http.server
import logging
import os
import socket
import socketserver
import threading
import time

import pytest

import util
import variants

greenlet = pytest.importorskip("greenlet", reason="green handlers need greenlet")

HOST = util.HOST
TIMEOUT = util.TIMEOUT


@pytest.fixture(params=["c-epoll", "c-poll"])
def green(request, monkeypatch):
    """fastserver.green, on the compiled core with each poller."""
    with variants.selected(request.param, monkeypatch):
        from fastserver import green as green_module

        yield green_module


def server_class(green, handler, **attributes):
    attributes.setdefault("request_queue_size", 128)
    cls = type("Server", (green.GreenTCPServer,), attributes)
    return cls((HOST, 0), handler)


class LineEcho(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)


def test_many_persistent_connections_are_served_by_one_thread(green):
    server = server_class(green, LineEcho)
    with util.background_server(server):
        clients = [util.tcp_connect(server.server_address) for _ in range(200)]
        try:
            threads_before = threading.active_count()
            for round_ in range(3):
                for i, client in enumerate(clients):
                    client.sendall(b"line %d %d\n" % (round_, i))
                for i, client in enumerate(clients):
                    assert util.recv_line(client) == b"line %d %d\n" % (round_, i)
            # No thread per connection: the loop's thread serves them all.
            assert threading.active_count() == threads_before
        finally:
            for client in clients:
                client.close()


def test_socket_level_handlers_recv_and_sendall(green):
    class Upper(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(7)  # short reads, then a full one
                if not data:
                    return
                self.request.sendall(data.upper() * 1000)

    server = server_class(green, Upper)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as client:
            client.sendall(b"abc")
            assert util.recv_exactly(client, 3000) == b"ABC" * 1000
            # 7 bytes at a time, each echoed 1000 times: 7 MB that the client
            # reads only once all is sent, so the server's sends block.
            client.sendall(b"x" * 7000)
            expected = 7000 * 1000
            assert len(util.recv_exactly(client, expected)) == expected


def test_the_request_is_a_socket_with_its_documented_methods(green):
    seen = {}

    class Inspect(socketserver.BaseRequestHandler):
        def handle(self):
            sock = self.request
            seen["isinstance"] = isinstance(sock, socket.socket)
            seen["timeout"] = sock.gettimeout()
            seen["blocking"] = sock.getblocking()
            sock.settimeout(2.5)
            seen["after_settimeout"] = (sock.gettimeout(), sock.timeout, sock.getblocking())
            sock.setblocking(False)
            try:
                sock.recv(10)
            except BlockingIOError:
                seen["non_blocking_recv"] = "BlockingIOError"
            sock.setblocking(True)
            sock.sendall(b"ready\n")  # the client sends only now
            seen["peer"] = sock.getpeername()
            buffer = bytearray(5)
            seen["recv_into"] = (sock.recv_into(buffer), bytes(buffer))
            with sock.makefile("rwb") as f:
                seen["makefile_line"] = f.readline()
                f.write(b"via makefile\n")
                f.flush()
            with open(__file__, "rb") as f:
                seen["sendfile"] = sock.sendfile(f, 0, 100)

    server = server_class(green, Inspect)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as client:
            assert util.recv_line(client) == b"ready\n"
            client.sendall(b"12345line\n")
            assert util.recv_line(client) == b"via makefile\n"
            assert len(util.recv_until_eof(client)) == 100
            peer = client.getsockname()
    assert seen == {
        "isinstance": True, "timeout": None, "blocking": True,
        "after_settimeout": (2.5, 2.5, True), "non_blocking_recv": "BlockingIOError",
        "peer": peer, "recv_into": (5, b"12345"), "makefile_line": b"line\n",
        "sendfile": 100,
    }


def test_handler_timeout_raises_socket_timeout_in_the_handler(green):
    outcome = []

    class Patient(socketserver.StreamRequestHandler):
        timeout = 0.2

        def handle(self):
            try:
                self.rfile.readline()
            except TimeoutError as exc:  # socket.timeout
                outcome.append(type(exc))

    server = server_class(green, Patient)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as client:
            assert util.recv_until_eof(client) == b""
    assert outcome == [socket.timeout]


def test_idle_timeout_closes_an_idle_connection_and_others_go_on(green):
    server = server_class(green, LineEcho, idle_timeout=0.3)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as idle, \
                util.tcp_connect(server.server_address) as busy:
            for i in range(8):
                busy.sendall(b"%d\n" % i)
                assert util.recv_line(busy) == b"%d\n" % i
                time.sleep(0.05)
            idle.settimeout(TIMEOUT)
            assert util.recv_until_eof(idle) == b""


def test_sleep_and_run_in_thread_let_the_others_run(green):
    class Slow(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                if line == b"sleep\n":
                    green.sleep(0.3)
                elif line == b"thread\n":
                    line = green.run_in_thread(lambda: (time.sleep(0.3), b"worked\n")[1])
                elif line == b"raise\n":
                    try:
                        green.run_in_thread(int, "not a number")
                    except ValueError:
                        line = b"ValueError\n"
                self.wfile.write(line)

    server = server_class(green, Slow)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as a, \
                util.tcp_connect(server.server_address) as b:
            for slow, expected in ((b"sleep\n", b"sleep\n"), (b"thread\n", b"worked\n")):
                started = time.monotonic()
                a.sendall(slow)
                b.sendall(b"quick\n")
                assert util.recv_line(b) == b"quick\n"
                quick = time.monotonic() - started
                assert util.recv_line(a) == expected
                assert quick < time.monotonic() - started  # b was not held behind a
            a.sendall(b"raise\n")
            assert util.recv_line(a) == b"ValueError\n"


def test_sleep_and_run_in_thread_outside_a_green_handler():
    from fastserver import green as green_module

    green_module.sleep(0)
    assert green_module.run_in_thread(lambda x: x + 1, 1) == 2


def test_a_slow_handler_is_reported(green, caplog):
    class Blocking(socketserver.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            time.sleep(0.15)  # blocking the loop: what the report is for
            self.wfile.write(b"done\n")

    server = server_class(green, Blocking, green_slow_callback=0.05)
    with caplog.at_level(logging.WARNING, logger="fastserver.green"):
        with util.background_server(server):
            with util.tcp_connect(server.server_address) as client:
                client.sendall(b"go\n")
                assert util.recv_line(client) == b"done\n"
    assert any("held the loop" in r.getMessage() for r in caplog.records)


def test_hooks_run_in_threading_mixins_order(green):
    def recorder(base, mixin):
        calls = []

        class Recording(mixin, base):
            request_queue_size = 16

            def verify_request(self, request, client_address):
                calls.append("verify_request")
                return super().verify_request(request, client_address)

            def process_request(self, request, client_address):
                calls.append("process_request")
                super().process_request(request, client_address)

            def finish_request(self, request, client_address):
                calls.append("finish_request")
                super().finish_request(request, client_address)

            def handle_error(self, request, client_address):
                calls.append("handle_error")

            def shutdown_request(self, request):
                calls.append("shutdown_request")
                super().shutdown_request(request)

            def close_request(self, request):
                calls.append("close_request")
                super().close_request(request)

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline()
                if line == b"fail\n":
                    raise ValueError("handler failed")
                self.wfile.write(line)

        return Recording, Handler, calls

    orders = {}
    for label, base, mixin in (("threads", socketserver.TCPServer, socketserver.ThreadingMixIn),
                               ("green", green.TCPServer, green.GreenMixIn)):
        cls, handler, calls = recorder(base, mixin)
        server = cls((HOST, 0), handler)
        with util.background_server(server):
            for line in (b"ok\n", b"fail\n"):
                with util.tcp_connect(server.server_address) as client:
                    client.sendall(line)
                    util.recv_until_eof(client)
                closes = 1 if line == b"ok\n" else 2
                util.wait_until(lambda calls=calls, closes=closes:
                                calls.count("close_request") == closes)
        orders[label] = calls
    assert orders["green"] == orders["threads"]


def test_shutdown_waits_for_the_handlers_in_flight(green):
    finished = []

    class Slow(socketserver.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            green.sleep(0.3)
            self.wfile.write(b"late\n")
            finished.append(True)

    server = server_class(green, Slow)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        with util.tcp_connect(server.server_address) as client:
            client.sendall(b"go\n")
            util.wait_until(lambda: server_has_parked(server))
            server.shutdown()  # returns once the handler in flight is done
            assert finished == [True]
            assert util.recv_line(client) == b"late\n"
    finally:
        thread.join(TIMEOUT)
        server.server_close()


def server_has_parked(server):
    # The loop took the connection: its handler waits in green.sleep().
    from fastserver import _engine

    return len(_engine.connections_of(server).sockets) == 1


def test_block_on_close_false_ends_the_handlers_at_shutdown(green):
    ended = []

    class Idle(socketserver.StreamRequestHandler):
        def handle(self):
            try:
                self.rfile.readline()
            finally:
                ended.append(True)

    server = server_class(green, Idle, block_on_close=False)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    with util.tcp_connect(server.server_address) as client:
        util.wait_until(lambda: server_has_parked(server))
        server.shutdown()
        thread.join(TIMEOUT)
        assert ended == [True]
        assert util.recv_until_eof(client) == b""
    server.server_close()


def test_shutdown_with_a_timeout_cuts_idle_connections(green):
    server = server_class(green, LineEcho)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    with util.tcp_connect(server.server_address) as client:
        client.sendall(b"x\n")
        assert util.recv_line(client) == b"x\n"
        started = time.monotonic()
        server.shutdown(timeout=0.2)
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert time.monotonic() - started < TIMEOUT
        assert util.recv_until_eof(client) == b""
    server.server_close()


def test_handle_request_serves_one_connection_to_its_end(green):
    server = server_class(green, LineEcho)
    with server:
        client = util.tcp_connect(server.server_address)
        client.sendall(b"one\ntwo\n")
        client.shutdown(socket.SHUT_WR)
        server.handle_request()
        assert util.recv_until_eof(client) == b"one\ntwo\n"
        client.close()


def test_max_connections_waits_for_room(green):
    server = server_class(green, LineEcho, max_connections=2)
    with util.background_server(server):
        first = util.tcp_connect(server.server_address)
        second = util.tcp_connect(server.server_address)
        for client in (first, second):
            client.sendall(b"hi\n")
            assert util.recv_line(client) == b"hi\n"
        third = util.tcp_connect(server.server_address)
        third.sendall(b"third\n")
        third.settimeout(0.3)
        with pytest.raises(TimeoutError):
            third.recv(10)  # waits in the backlog
        first.close()
        third.settimeout(TIMEOUT)
        assert util.recv_line(third) == b"third\n"
        second.close()
        third.close()


def test_http_server_handlers_on_a_green_server(green, tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"hello, green\n")

    class Files(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = server_class(green, Files)
    with util.background_server(server):
        connection = http.client.HTTPConnection(HOST, server.server_address[1],
                                                timeout=TIMEOUT)
        for _ in range(3):  # keep-alive: one connection, one greenlet
            connection.request("GET", "/hello.txt")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"hello, green\n")
        connection.request("GET", "/missing")
        assert connection.getresponse().status == 404
        connection.close()


def test_a_thousand_idle_connections_and_a_new_client_is_served(green):
    server = server_class(green, LineEcho, request_queue_size=1024)
    with util.background_server(server):
        idle = [util.tcp_connect(server.server_address) for _ in range(1000)]
        try:
            util.wait_until(lambda: len(green._engine.connections_of(server).sockets) == 1000)
            with util.tcp_connect(server.server_address) as client:
                client.sendall(b"still here\n")
                assert util.recv_line(client) == b"still here\n"
        finally:
            for client in idle:
                client.close()


def test_no_fd_left_behind(green):
    server = server_class(green, LineEcho)
    before = util.open_fds()
    with util.background_server(server):
        for _ in range(20):
            with util.tcp_connect(server.server_address) as client:
                client.sendall(b"x\n")
                assert util.recv_line(client) == b"x\n"
    util.wait_until(lambda: util.open_fds() <= before)


def test_a_custom_get_request_is_refused_when_the_loop_starts(green):
    class Custom(green.GreenTCPServer):
        def get_request(self):
            return super().get_request()

    server = Custom((HOST, 0), LineEcho)
    with server, pytest.raises(TypeError, match="green handlers serve the connections"):
        server.serve_forever()


def test_the_python_core_refuses_green_servers(monkeypatch):
    with variants.selected("py", monkeypatch):
        from fastserver import green as green_module

        with pytest.raises(RuntimeError, match="compiled core"):
            green_module.GreenTCPServer((HOST, 0), LineEcho)


def test_green_slow_callback_is_a_checked_setting(green):
    with pytest.raises(ValueError, match="green_slow_callback"):
        server_class(green, LineEcho, green_slow_callback=-1)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets")
def test_unix_stream_server(green):
    with util.short_tmpdir() as tmpdir:
        path = os.path.join(tmpdir, "green.sock")
        server = green.GreenUnixStreamServer(path, LineEcho)
        with util.background_server(server):
            assert util.unix_stream_roundtrip(path, b"unix\n", shut_wr=True) == b"unix\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="PreforkMixIn forks")
def test_prefork_workers_each_run_a_green_loop(green):
    class Pids(socketserver.StreamRequestHandler):
        def handle(self):
            for _line in self.rfile:
                self.wfile.write(b"%d\n" % os.getpid())

    class Server(green.GreenMixIn, green.TCPServer):
        block_on_close = False

    from fastserver import PreforkMixIn

    cls = type("PreforkGreen", (PreforkMixIn, Server), {"workers": 2})
    server = cls((HOST, 0), Pids)
    with util.background_server(server):
        clients = [util.tcp_connect(server.server_address) for _ in range(20)]
        try:
            pids = set()
            for client in clients:
                client.sendall(b"pid?\n")
                pids.add(util.recv_line(client))
            assert len(pids) >= 1 and str(os.getpid()).encode() + b"\n" not in pids
            # Every connection stays open on its worker's green loop.
            for client in clients:
                client.sendall(b"again\n")
                assert util.recv_line(client) in pids
        finally:
            for client in clients:
                client.close()
