"""ThreadingMixIn and ForkingMixIn: where requests run, what the server keeps
track of, and what server_close() waits for (CPython 3.13's semantics)."""
import contextlib
import os
import socket
import socketserver
import sys
import threading
import time

import pytest

import util
from util import open_fds

HOST = util.HOST
TIMEOUT = util.TIMEOUT
HAS_FORK = hasattr(os, "fork")
HAS_UNIX = hasattr(socket, "AF_UNIX")

needs_fork = pytest.mark.skipif(not HAS_FORK, reason="no fork()")
needs_unix = pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
# Python 3.12+ warns when a process with threads forks; the tests run the
# server loop in a thread on purpose, as users do.
ignore_fork_warning = pytest.mark.filterwarnings(
    "ignore:.*multi-threaded.*:DeprecationWarning")


def _exit_code(status):
    if hasattr(os, "waitstatus_to_exitcode"):
        return os.waitstatus_to_exitcode(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)


def _skip_if_stdlib_lacks(ss, name):
    if ss is socketserver and not hasattr(socketserver, name):
        pytest.skip("the stdlib of Python %d.%d has no %s" % (sys.version_info[:2] + (name,)))


# ---------------------------------------------------------------------------
# ThreadingMixIn
# ---------------------------------------------------------------------------

def test_threading_request_runs_in_another_thread(ss):
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            seen.append(threading.current_thread())
            self.request.sendall(b"ok")

    with ss.ThreadingTCPServer((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            assert util.recv_until_eof(client) == b"ok"
    assert len(seen) == 1
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()  # joined by server_close()

    seen.clear()
    server = ss.ThreadingTCPServer((HOST, 0), Handler)
    with util.background_server(server):
        for _ in range(3):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
    assert len(set(seen)) == 3
    assert all(t.name != "serve_forever" and t is not threading.current_thread() for t in seen)


def test_threading_requests_run_concurrently(ss):
    barrier = threading.Barrier(3, timeout=TIMEOUT)

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            barrier.wait()  # both requests at once, and the test
            self.request.sendall(b"together")

    server = ss.ThreadingTCPServer((HOST, 0), Handler)
    with util.background_server(server):
        clients = [util.tcp_connect(server.server_address) for _ in range(2)]
        try:
            barrier.wait()
            for client in clients:
                assert util.recv_until_eof(client) == b"together"
        finally:
            for client in clients:
                client.close()


@pytest.mark.parametrize("daemon", [False, True])
def test_daemon_threads(ss, daemon):
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            seen.append(threading.current_thread().daemon)

    class Server(ss.ThreadingTCPServer):
        daemon_threads = daemon

    with Server((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            util.recv_until_eof(client)
    assert seen == [daemon]


def test_daemon_threads_on_the_instance(ss):
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            seen.append(threading.current_thread().daemon)

    with ss.ThreadingTCPServer((HOST, 0), Handler) as server:
        server.daemon_threads = True
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            util.recv_until_eof(client)
    assert seen == [True]


def test_block_on_close_true_joins_the_threads(ss):
    done = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            time.sleep(0.3)
            done.append(threading.current_thread())

    server = ss.ThreadingTCPServer((HOST, 0), Handler)
    assert server.block_on_close is True
    with util.tcp_connect(server.server_address):
        server.handle_request()
        closer = util.ThreadCall(server.server_close)
        assert closer.join(TIMEOUT)
        # server_close() returned only after the handler had finished.
        assert len(done) == 1
        assert not done[0].is_alive()


def test_block_on_close_true_joins_threads_of_serve_forever(ss):
    done = []
    started = threading.Event()

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            started.set()
            time.sleep(0.3)
            done.append(True)

    server = ss.ThreadingTCPServer((HOST, 0), Handler)
    with util.tcp_connect(server.server_address):
        with util.background_server(server, close=False):
            assert started.wait(TIMEOUT)
        server.server_close()
        assert done == [True]


def test_block_on_close_false_does_not_wait(ss):
    release = threading.Event()
    done = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            release.wait(TIMEOUT)
            done.append(True)

    class Server(ss.ThreadingTCPServer):
        block_on_close = False

    server = Server((HOST, 0), Handler)
    try:
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            closer = util.ThreadCall(server.server_close)
            assert closer.join(TIMEOUT), "server_close() waited for the handler"
            assert done == []
            release.set()
            assert util.recv_until_eof(client) == b""
            assert util.wait_until(lambda: done == [True])
    finally:
        release.set()


def test_daemon_threads_are_not_joined_by_server_close(ss):
    """_Threads.append() drops daemon threads: server_close() does not wait
    for them even with block_on_close."""
    release = threading.Event()
    done = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            release.wait(TIMEOUT)
            done.append(True)

    class Server(ss.ThreadingTCPServer):
        daemon_threads = True

    server = Server((HOST, 0), Handler)
    assert server.block_on_close is True
    try:
        with util.tcp_connect(server.server_address):
            server.handle_request()
            closer = util.ThreadCall(server.server_close)
            assert closer.join(TIMEOUT), "server_close() waited for a daemon thread"
            assert done == []
            release.set()
            assert util.wait_until(lambda: done == [True])
    finally:
        release.set()


def _live_threads(server):
    return [t for t in list(server._threads) if t.is_alive()]


def test_finished_threads_are_not_kept(ss):
    """server._threads (a _Threads list) reaps dead threads on append."""

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"ok")

    server = ss.ThreadingTCPServer((HOST, 0), Handler)
    with util.background_server(server, close=False):
        for _ in range(30):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
            # Once the earlier threads are over, the next append drops them.
            assert util.wait_until(lambda: not _live_threads(server))
            assert len(server._threads) <= 1
        assert len(server._threads) == 1
    server.server_close()
    assert len(server._threads) == 0


def test_many_requests_keep_threads_bounded(ss):
    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"ok")

    server = ss.ThreadingTCPServer((HOST, 0), Handler)
    with util.background_server(server, close=False):
        for _ in range(100):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
        # Not one entry per request ever served: only the ones still running
        # when the last append happened, plus the last one.
        assert len(server._threads) < 50
    server.server_close()
    assert len(server._threads) == 0


@pytest.mark.parametrize("attrs", [{"daemon_threads": True}, {"block_on_close": False}],
                         ids=["daemon_threads", "no_block_on_close"])
def test_no_threads_kept_when_not_joined(ss, attrs):
    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"ok")

    Server = type("Server", (ss.ThreadingTCPServer,), dict(attrs))
    server = Server((HOST, 0), Handler)
    with util.background_server(server):
        for _ in range(10):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
        threads = server._threads
        if hasattr(threads, "__len__"):
            assert len(threads) == 0


def test_threads_list_is_per_instance(ss):
    class Handler(ss.BaseRequestHandler):
        pass

    with ss.ThreadingTCPServer((HOST, 0), Handler) as first, \
            ss.ThreadingTCPServer((HOST, 0), Handler) as second:
        with util.tcp_connect(first.server_address) as client:
            first.handle_request()
            util.recv_until_eof(client)
        assert first._threads is not second._threads
        assert not hasattr(second._threads, "__len__") or len(second._threads) == 0


def test_threading_handler_error(ss, capfd):
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            if self.request.recv(1) == b"!":
                raise ValueError("boom")
            self.request.sendall(b"ok")

    class Server(ss.ThreadingTCPServer):
        def handle_error(self, request, client_address):
            seen.append((threading.current_thread(), sys.exc_info()[0], client_address))
            super().handle_error(request, client_address)

        def shutdown_request(self, request):
            seen.append(("shutdown_request", threading.current_thread()))
            super().shutdown_request(request)

    server = Server((HOST, 0), Handler)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as client:
            address = client.getsockname()
            client.sendall(b"!")
            assert util.recv_until_eof(client) == b""
        assert util.tcp_roundtrip(server.server_address, b".") == b"ok"
    worker, exc_type, client_address = seen[0]
    assert worker is not threading.current_thread() and worker.name != "serve_forever"
    assert exc_type is ValueError and client_address == address
    assert seen[1] == ("shutdown_request", worker)
    err = capfd.readouterr().err
    assert "Exception occurred during processing of request from %s" % (address,) in err
    assert "ValueError: boom" in err


def test_threading_udp_server(ss):
    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            name = threading.current_thread().name.encode()
            self.wfile.write(self.rfile.read().upper() + b"|" + name)

    server = ss.ThreadingUDPServer((HOST, 0), Handler)
    with util.background_server(server):
        replies = [util.udp_roundtrip(server.server_address, b"hi %d" % i) for i in range(3)]
    names = set()
    for i, reply in enumerate(replies):
        data, _, name = reply.partition(b"|")
        assert data == b"HI %d" % i
        assert name not in (b"serve_forever", threading.current_thread().name.encode())
        names.add(name)
    assert len(names) == 3


@needs_unix
def test_threading_unix_stream_server(ss):
    class Handler(ss.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "s")
        server = ss.ThreadingUnixStreamServer(path, Handler)
        with util.background_server(server):
            for i in range(3):
                assert util.unix_stream_roundtrip(path, b"echo %d\n" % i) == b"ECHO %d\n" % i


@needs_unix
def test_threading_unix_datagram_server(ss):
    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read().upper())

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "d")
        server = ss.ThreadingUnixDatagramServer(path, Handler)
        with util.background_server(server):
            for i in range(3):
                reply = util.unix_dgram_roundtrip(path, b"echo %d" % i, os.path.join(tmp, "c"))
                assert reply == b"ECHO %d" % i


# ---------------------------------------------------------------------------
# ForkingMixIn
# ---------------------------------------------------------------------------

class PidHandlerMixin:
    """Reply "<pid> <first line upper-cased>"."""

    def handle(self):
        line = self.rfile.readline().strip()
        self.wfile.write(b"%d %s" % (os.getpid(), line.upper()))


def _pid_handler(ss):
    # (the timeout bounds a child's wait for its line if a test goes wrong)
    return type("PidHandler", (PidHandlerMixin, ss.StreamRequestHandler),
                {"timeout": TIMEOUT})


def _parse(reply):
    pid, _, data = reply.partition(b" ")
    return int(pid), data


def _assert_reaped(pids):
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _assert_no_zombies():
    try:
        result = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return
    assert result == (0, 0), "a zombie child was left: %r" % (result,)


@contextlib.contextmanager
def _closing(sockets):
    """Close the client sockets on the way out -- after sending each a line:
    the children inherited copies of the client ends, so closing alone would
    not end a child's readline()."""
    try:
        yield sockets
    finally:
        for sock in sockets:
            try:
                sock.sendall(b"release\n")
            except OSError:
                pass
            sock.close()


@pytest.fixture
def forking_cleanup():
    """Whatever happens, leave no child of ours behind."""
    yield
    util.reap_children()


@needs_fork
@ignore_fork_warning
def test_forking_request_runs_in_a_child(ss, forking_cleanup):
    with ss.ForkingTCPServer((HOST, 0), _pid_handler(ss)) as server:
        assert server.active_children is None
        with util.tcp_connect(server.server_address) as client:
            client.sendall(b"hello\n")
            server.handle_request()
            pid, data = _parse(util.recv_until_eof(client))
        assert data == b"HELLO"
        assert pid != os.getpid()
        # Tracked until collected.
        assert isinstance(server.active_children, set)
        assert server.active_children == {pid}
        server.collect_children(blocking=True)
        assert server.active_children == set()
    _assert_reaped([pid])


@needs_fork
@ignore_fork_warning
def test_forking_children_reaped_by_service_actions(ss, forking_cleanup):
    server = ss.ForkingTCPServer((HOST, 0), _pid_handler(ss))
    with util.background_server(server, poll_interval=0.02):
        pids = [_parse(util.tcp_roundtrip(server.server_address, b"x\n"))[0] for _ in range(3)]
        assert len(set(pids)) == 3 and os.getpid() not in pids
        # serve_forever() calls service_actions() -> collect_children().
        assert util.wait_until(lambda: not server.active_children), server.active_children
        _assert_reaped(pids)


@needs_fork
@ignore_fork_warning
def test_forking_children_reaped_by_handle_timeout(ss, forking_cleanup):
    with ss.ForkingTCPServer((HOST, 0), _pid_handler(ss)) as server:
        server.timeout = 0.02
        with util.tcp_connect(server.server_address) as client:
            client.sendall(b"x\n")
            server.handle_request()
            pid, _ = _parse(util.recv_until_eof(client))
        assert pid in server.active_children

        def timed_out_and_reaped():
            server.handle_request()  # no client: handle_timeout() -> collect_children()
            return not server.active_children

        assert util.wait_until(timed_out_and_reaped)
    _assert_reaped([pid])


@needs_fork
@ignore_fork_warning
def test_forking_collect_children_without_children(ss):
    with ss.ForkingTCPServer((HOST, 0), ss.BaseRequestHandler) as server:
        server.collect_children()
        server.collect_children(blocking=True)
        assert server.active_children is None
        server.handle_timeout()


@needs_fork
@ignore_fork_warning
def test_forking_max_children(ss, forking_cleanup):
    """With max_children children running, the loop (in service_actions ->
    collect_children) waits for one to exit before accepting more."""

    class Server(ss.ForkingTCPServer):
        max_children = 2

    server = Server((HOST, 0), _pid_handler(ss))
    clients = []
    try:
        with util.background_server(server, poll_interval=0.02), _closing(clients):
            for expected in (1, 2):
                clients.append(util.tcp_connect(server.server_address))
                assert util.wait_until(
                    lambda expected=expected: len(server.active_children or ()) == expected)
            # A third request is not accepted while two children run.
            third = util.tcp_connect(server.server_address)
            clients.append(third)
            third.sendall(b"third\n")
            third.settimeout(1.0)
            with pytest.raises(socket.timeout):
                third.recv(100)
            assert len(server.active_children) == 2
            third.settimeout(TIMEOUT)
            # Let the first child finish: the third request is served.
            clients[0].sendall(b"first\n")
            assert _parse(util.recv_until_eof(clients[0]))[1] == b"FIRST"
            assert _parse(util.recv_until_eof(third))[1] == b"THIRD"
            clients[1].sendall(b"second\n")
            assert _parse(util.recv_until_eof(clients[1]))[1] == b"SECOND"
        assert not server.active_children
    finally:
        for client in clients:
            client.close()
    _assert_no_zombies()


@needs_fork
@ignore_fork_warning
def test_forking_max_children_with_a_burst(ss, forking_cleanup):
    """Requests already waiting when serve_forever() starts: still no more
    than max_children children at a time (service_actions() runs after
    every request, so collect_children() holds the loop at the bound)."""
    peak = []

    class Server(ss.ForkingTCPServer):
        max_children = 2

        def process_request(self, request, client_address):
            super().process_request(request, client_address)
            peak.append(len(self.active_children))

    server = Server((HOST, 0), _pid_handler(ss))
    clients = [util.tcp_connect(server.server_address) for _ in range(4)]
    try:
        assert util.wait_readable(server.socket)
        # (_closing: on failure, the clients close before server_close()
        # waits for the children that read from them)
        with util.background_server(server, poll_interval=0.02), _closing(clients):
            assert util.wait_until(lambda: len(server.active_children or ()) >= 2)
            # Give a loop that ignores the bound the time to fork more.
            assert not util.wait_until(lambda: len(peak) > 2, timeout=1.0), peak
            for i, client in enumerate(clients):
                client.sendall(b"burst %d\n" % i)
            for i, client in enumerate(clients):
                assert _parse(util.recv_until_eof(client))[1] == b"BURST %d" % i
        assert max(peak) == 2, peak
        assert len(peak) == 4
    finally:
        for client in clients:
            client.close()
    _assert_no_zombies()


@needs_fork
@ignore_fork_warning
def test_forking_block_on_close_waits_for_children(ss, tmp_path, forking_cleanup):
    marker = tmp_path / "done"

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            time.sleep(0.3)
            marker.write_text(str(os.getpid()))

    server = ss.ForkingTCPServer((HOST, 0), Handler)
    assert server.block_on_close is True
    with util.tcp_connect(server.server_address):
        server.handle_request()
        (pid,) = server.active_children
        closer = util.ThreadCall(server.server_close)
        assert closer.join(TIMEOUT)
        assert closer.exc is None
    # server_close() returned after the child had finished, and reaped it.
    assert marker.read_text() == str(pid)
    assert server.active_children == set()
    _assert_reaped([pid])


@needs_fork
@ignore_fork_warning
def test_forking_block_on_close_false_does_not_wait(ss, forking_cleanup):
    class Server(ss.ForkingTCPServer):
        block_on_close = False

    server = Server((HOST, 0), _pid_handler(ss))
    with util.tcp_connect(server.server_address) as client:
        server.handle_request()
        (pid,) = server.active_children
        closer = util.ThreadCall(server.server_close)
        assert closer.join(TIMEOUT), "server_close() waited for the child"
        # Still running (it waits for our line), still tracked.
        assert server.active_children == {pid}
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
        client.sendall(b"late\n")
        assert _parse(util.recv_until_eof(client)) == (pid, b"LATE")
    waited, status = os.waitpid(pid, 0)
    assert waited == pid and _exit_code(status) == 0


@needs_fork
@ignore_fork_warning
def test_forking_no_zombies_after_server_close(ss, forking_cleanup):
    server = ss.ForkingTCPServer((HOST, 0), _pid_handler(ss))
    with util.background_server(server, poll_interval=0.5):
        # (after a first request: the loop has set itself up by then)
        pids = [_parse(util.tcp_roundtrip(server.server_address, b"x\n"))[0]]
        fds = open_fds()
        pids += [_parse(util.tcp_roundtrip(server.server_address, b"x\n"))[0] for _ in range(5)]
        # The parent closed its copy of each request socket.
        assert util.wait_until(lambda: open_fds() <= fds)
    assert not server.active_children
    _assert_reaped(pids)
    _assert_no_zombies()


@needs_fork
@ignore_fork_warning
@pytest.mark.parametrize("failure", ["exception", "ok", "system_exit"])
def test_forking_child_exit_status(ss, failure, capfd, forking_cleanup):
    """The child exits with os._exit(0) after success, os._exit(1) after an
    exception (handle_error() runs in the child) -- and also 1 when a
    BaseException ends the request, which os._exit() swallows."""
    forked = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            if failure == "exception":
                raise ValueError("child boom")
            if failure == "system_exit":
                raise SystemExit(0)
            self.request.sendall(b"ok")

    class Server(ss.ForkingTCPServer):
        def process_request(self, request, client_address):
            before = set(self.active_children or ())
            super().process_request(request, client_address)
            forked.extend(set(self.active_children) - before)

    with Server((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address) as client:
            address = client.getsockname()
            server.handle_request()  # must return in the parent only
            reply = util.recv_until_eof(client)
        (pid,) = forked
        waited, status = os.waitpid(pid, 0)
        assert waited == pid
        assert _exit_code(status) == (0 if failure == "ok" else 1)
        assert reply == (b"ok" if failure == "ok" else b"")
    # server_close() copes with a child someone else reaped.
    assert server.active_children == set()
    err = capfd.readouterr().err
    if failure == "exception":
        assert "Exception occurred during processing of request from %s" % (address,) in err
        assert "ValueError: child boom" in err
    else:
        assert "Exception occurred" not in err


@needs_fork
@ignore_fork_warning
def test_forking_udp_server(ss, forking_cleanup):
    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(b"%d %s" % (os.getpid(), self.rfile.read().upper()))

    server = ss.ForkingUDPServer((HOST, 0), Handler)
    with util.background_server(server):
        replies = [_parse(util.udp_roundtrip(server.server_address, b"dgram %d" % i))
                   for i in range(3)]
    assert [data for _, data in replies] == [b"DGRAM %d" % i for i in range(3)]
    pids = [pid for pid, _ in replies]
    assert os.getpid() not in pids and len(set(pids)) == 3
    assert not server.active_children
    _assert_reaped(pids)


@needs_fork
@needs_unix
@ignore_fork_warning
def test_forking_unix_stream_server(ss, forking_cleanup):
    _skip_if_stdlib_lacks(ss, "ForkingUnixStreamServer")
    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "s")
        server = ss.ForkingUnixStreamServer(path, _pid_handler(ss))
        with util.background_server(server):
            replies = [_parse(util.unix_stream_roundtrip(path, b"unix %d\n" % i))
                       for i in range(3)]
        assert [data for _, data in replies] == [b"UNIX %d" % i for i in range(3)]
        pids = [pid for pid, _ in replies]
        assert os.getpid() not in pids
        assert not server.active_children
        _assert_reaped(pids)


@needs_fork
@needs_unix
@ignore_fork_warning
def test_forking_unix_datagram_server(ss, forking_cleanup):
    _skip_if_stdlib_lacks(ss, "ForkingUnixDatagramServer")

    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(b"%d %s" % (os.getpid(), self.rfile.read().upper()))

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "d")
        server = ss.ForkingUnixDatagramServer(path, Handler)
        with util.background_server(server):
            replies = [_parse(util.unix_dgram_roundtrip(path, b"ud %d" % i,
                                                        os.path.join(tmp, "c")))
                       for i in range(3)]
        assert [data for _, data in replies] == [b"UD %d" % i for i in range(3)]
        pids = [pid for pid, _ in replies]
        assert os.getpid() not in pids
        _assert_reaped(pids)


@needs_fork
@ignore_fork_warning
def test_forking_user_defined_server(ss, forking_cleanup):
    """The documented combination order works with ForkingMixIn too."""

    class Server(ss.ForkingMixIn, ss.TCPServer):
        pass

    server = Server((HOST, 0), _pid_handler(ss))
    with util.background_server(server):
        pid, data = _parse(util.tcp_roundtrip(server.server_address, b"mine\n"))
    assert data == b"MINE" and pid != os.getpid()
    _assert_reaped([pid])
