"""The hooks of BaseServer and BaseRequestHandler: which are called, in which
order, with which arguments -- the stdlib's ``_handle_request_noblock`` chain,
``serve_forever``/``shutdown`` and ``handle_request``/``handle_timeout``.

The expected call sequences are literal lists (CPython 3.13's behaviour); the
stdlib variant proves them, fastserver must reproduce them.  Arguments are
recorded symbolically: "REQ" is the very object get_request() returned,
"ADDR" the client address it returned, "SERVER" the server itself.
"""
import os
import socket
import sys
import threading

import pytest

import util

HOST = util.HOST
TIMEOUT = util.TIMEOUT
HAS_UNIX = hasattr(socket, "AF_UNIX")


class Boom(BaseException):
    """A BaseException that is not an Exception."""


# ---------------------------------------------------------------------------
# The recording server and handler
# ---------------------------------------------------------------------------

class Recorder:
    """Collects hook calls as tuples: (hook name, symbolic arguments...)."""

    def __init__(self):
        self.calls = []
        self.request = None
        self.address = None
        self.server = None

    def token(self, value):
        if self.request is not None and value is self.request:
            return "REQ"
        if self.request is not None and value == self.request:
            return "REQ(equal but not the same object)"
        if self.address is not None and value == self.address:
            return "ADDR"
        if self.server is not None and value is self.server:
            return "SERVER"
        return repr(value)

    def add(self, name, *args):
        self.calls.append((name,) + tuple(self.token(a) for a in args))

    def names(self):
        return [call[0] for call in self.calls]

    def collapsed(self):
        """The calls with runs of service_actions collapsed into one."""
        result = []
        for call in self.calls:
            if call == ("service_actions",) and result and result[-1] == call:
                continue
            result.append(call)
        return result


def recording_classes(ss, rec, base="TCPServer", handler_base="BaseRequestHandler",
                      handle=None):
    """A server class and a handler class of ``ss`` that record every hook
    into ``rec``.  ``handle(handler)`` is the handler's body."""
    server_base = getattr(ss, base)
    request_handler_base = getattr(ss, handler_base)

    class Server(server_base):
        def server_bind(self):
            rec.server = self
            rec.add("server_bind")
            super().server_bind()

        def server_activate(self):
            rec.add("server_activate")
            super().server_activate()

        def get_request(self):
            rec.add("get_request")
            request, address = super().get_request()
            rec.request, rec.address = request, address
            return request, address

        def verify_request(self, request, client_address):
            rec.add("verify_request", request, client_address)
            return super().verify_request(request, client_address)

        def process_request(self, request, client_address):
            rec.add("process_request", request, client_address)
            super().process_request(request, client_address)

        if hasattr(server_base, "process_request_thread"):
            def process_request_thread(self, request, client_address):
                rec.add("process_request_thread", request, client_address)
                super().process_request_thread(request, client_address)

        def finish_request(self, request, client_address):
            rec.add("finish_request", request, client_address)
            super().finish_request(request, client_address)

        def shutdown_request(self, request):
            rec.add("shutdown_request", request)
            super().shutdown_request(request)

        def close_request(self, request):
            rec.add("close_request", request)
            super().close_request(request)

        def service_actions(self):
            rec.add("service_actions")
            super().service_actions()

        def handle_timeout(self):
            rec.add("handle_timeout")
            return super().handle_timeout()

        def handle_error(self, request, client_address):
            exc_type = sys.exc_info()[0]
            rec.add("handle_error", request, client_address)
            rec.calls[-1] += ("exc_info=%s" % (exc_type.__name__ if exc_type else None),)
            super().handle_error(request, client_address)

        def server_close(self):
            rec.add("server_close")
            super().server_close()

    class Handler(request_handler_base):
        def __init__(self, request, client_address, server):
            rec.add("handler.__init__", request, client_address, server)
            super().__init__(request, client_address, server)

        def setup(self):
            rec.add("handler.setup")
            super().setup()

        def handle(self):
            rec.add("handler.handle")
            if handle is not None:
                handle(self)

        def finish(self):
            rec.add("handler.finish")
            super().finish()

    return Server, Handler


def reply_ok(handler):
    """Handler body: answer b"ok" (TCP, Unix stream or datagram)."""
    if isinstance(handler.request, tuple):
        handler.request[1].sendto(b"ok", handler.client_address)
    else:
        handler.request.sendall(b"ok")


def raise_value_error(handler):
    raise ValueError("boom")


def raise_boom(handler):
    raise Boom("boom")


def raise_system_exit(handler):
    raise SystemExit(3)


def raise_keyboard_interrupt(handler):
    raise KeyboardInterrupt


# The chain for one request handled without error.
CHAIN = [
    ("get_request",),
    ("verify_request", "REQ", "ADDR"),
    ("process_request", "REQ", "ADDR"),
    ("finish_request", "REQ", "ADDR"),
    ("handler.__init__", "REQ", "ADDR", "SERVER"),
    ("handler.setup",),
    ("handler.handle",),
    ("handler.finish",),
    ("shutdown_request", "REQ"),
    ("close_request", "REQ"),
]
CONSTRUCT = [("server_bind",), ("server_activate",)]


# ---------------------------------------------------------------------------
# Clients for the three transports
# ---------------------------------------------------------------------------

class Transport:
    """Make a server of one transport and talk to it."""

    def __init__(self, kind, tmpdir=None):
        self.kind = kind
        self.tmpdir = tmpdir
        self.count = 0

    @property
    def base(self):
        return {"tcp": "TCPServer", "udp": "UDPServer", "unix": "UnixStreamServer"}[self.kind]

    @property
    def address(self):
        if self.kind == "unix":
            return os.path.join(self.tmpdir, "srv")
        return (HOST, 0)

    def connect(self, server, data=b"x"):
        """Start a request (connect / send a datagram); return the client."""
        if self.kind == "tcp":
            sock = util.tcp_connect(server.server_address)
        elif self.kind == "unix":
            sock = util.unix_connect(server.server_address)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(TIMEOUT)
            sock.bind((HOST, 0))
            sock.sendto(data, server.server_address)
        return sock

    def reply(self, sock):
        """The server's whole answer (to EOF for streams, one datagram)."""
        if self.kind == "udp":
            return sock.recv(65536)
        return util.recv_until_eof(sock)


@pytest.fixture(params=["tcp", "udp", "unix"])
def transport(request):
    if request.param == "unix" and not HAS_UNIX:
        pytest.skip("no AF_UNIX")
    with util.short_tmpdir() as tmp:
        yield Transport(request.param, tmp)


def pending_request(transport, server):
    """A client whose request is waiting in the server socket."""
    client = transport.connect(server)
    assert util.wait_readable(server.socket), "the request never reached the server"
    return client


# ---------------------------------------------------------------------------
# The chain of hooks
# ---------------------------------------------------------------------------

def test_construction_calls_bind_then_activate(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base)
    with Server(transport.address, Handler):
        assert rec.calls == CONSTRUCT
    assert rec.calls == CONSTRUCT + [("server_close",)]


def test_construction_without_bind_and_activate(ss):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec)
    server = Server((HOST, 0), Handler, bind_and_activate=False)
    assert rec.calls == []
    server.server_bind()
    server.server_activate()
    server.server_close()
    assert rec.calls == CONSTRUCT + [("server_close",)]


def test_handle_request_chain(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=reply_ok)
    with Server(transport.address, Handler) as server:
        with pending_request(transport, server) as client:
            assert server.handle_request() is None
            assert transport.reply(client) == b"ok"
    assert rec.calls == CONSTRUCT + CHAIN + [("server_close",)]


def test_serve_forever_chain(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=reply_ok)
    server = Server(transport.address, Handler)
    with pending_request(transport, server) as client:
        with util.background_server(server):
            assert transport.reply(client) == b"ok"
    # service_actions() follows each request in the same loop iteration, and
    # runs on every timed-out poll: the number of those depends on timing,
    # so runs of it are collapsed.
    # The request was waiting before serve_forever() started: the first
    # poll finds it.
    assert rec.collapsed() == CONSTRUCT + CHAIN + [("service_actions",), ("server_close",)]


def test_serve_forever_two_pending_requests(ss, transport):
    """One request per loop iteration, service_actions() after each."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=reply_ok)
    server = Server(transport.address, Handler)
    first = pending_request(transport, server)
    second = transport.connect(server)
    try:
        with util.background_server(server):
            assert transport.reply(first) == b"ok"
            assert transport.reply(second) == b"ok"
    finally:
        first.close()
        second.close()
    calls = rec.collapsed()
    assert calls == (CONSTRUCT + CHAIN + [("service_actions",)]
                     + CHAIN + [("service_actions",), ("server_close",)])


def test_serve_forever_sequential_requests(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=reply_ok)
    server = Server(transport.address, Handler)
    with util.background_server(server):
        for _ in range(3):
            with transport.connect(server) as client:
                assert transport.reply(client) == b"ok"
    calls = [c for c in rec.calls if c != ("service_actions",)]
    assert calls == CONSTRUCT + CHAIN * 3 + [("server_close",)]
    # Each request is followed by a service_actions() call.
    names = rec.names()
    for index, name in enumerate(names):
        if name == "close_request":
            assert names[index + 1] == "service_actions"


def test_threading_chain(ss, transport):
    """ThreadingMixIn: process_request starts process_request_thread, which
    runs the chain in the new thread; server_close() joins it."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, "Threading" + transport.base,
                                        handle=reply_ok)
    threads = []
    original_init = Handler.__init__

    def init(self, request, client_address, server):
        threads.append(threading.current_thread())
        original_init(self, request, client_address, server)

    Handler.__init__ = init
    server = Server(transport.address, Handler)
    with pending_request(transport, server) as client:
        server.handle_request()
        # (UDP answers through the server socket: read before closing it.)
        assert transport.reply(client) == b"ok"
        assert util.wait_until(lambda: "close_request" in rec.names())
        server.server_close()
    assert rec.calls == CONSTRUCT + [
        ("get_request",),
        ("verify_request", "REQ", "ADDR"),
        ("process_request", "REQ", "ADDR"),
        ("process_request_thread", "REQ", "ADDR"),
        ("finish_request", "REQ", "ADDR"),
        ("handler.__init__", "REQ", "ADDR", "SERVER"),
        ("handler.setup",),
        ("handler.handle",),
        ("handler.finish",),
        ("shutdown_request", "REQ"),
        ("close_request", "REQ"),
        ("server_close",),
    ]
    assert threads and threads[0] is not threading.current_thread()


def test_get_request_returns_what_the_socket_gives(ss, transport):
    """TCP: (connected socket, peer address); UDP: ((data, server socket), address)."""
    seen = {}

    class Server(getattr(ss, transport.base)):
        def get_request(self):
            result = super().get_request()
            seen["result"] = result
            return result

    with Server(transport.address, ss.BaseRequestHandler) as server:
        with pending_request(transport, server) as client:
            server.handle_request()
            (request, address) = seen["result"]
            if transport.kind == "udp":
                assert request == (b"x", server.socket)
                assert request[1] is server.socket
                assert address == client.getsockname()
            else:
                assert isinstance(request, socket.socket)
                assert request.fileno() == -1  # closed by close_request()
                if transport.kind == "tcp":
                    assert address == client.getsockname()
                else:
                    assert address in ("", None, b"")


# ---------------------------------------------------------------------------
# verify_request returning False
# ---------------------------------------------------------------------------

def test_verify_request_false_refuses_the_request(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=reply_ok)

    class Refusing(Server):
        def verify_request(self, request, client_address):
            super().verify_request(request, client_address)
            return False

    with Refusing(transport.address, Handler) as server:
        with pending_request(transport, server) as client:
            assert server.handle_request() is None
            if transport.kind != "udp":
                assert transport.reply(client) == b""
    assert rec.calls == CONSTRUCT + [
        ("get_request",),
        ("verify_request", "REQ", "ADDR"),
        ("shutdown_request", "REQ"),
        ("close_request", "REQ"),
        ("server_close",),
    ]


@pytest.mark.parametrize("verdict", [0, "", None, [], 1, "yes", [0]])
def test_verify_request_truthiness(ss, verdict):
    """Any false value refuses, any true value accepts (a plain ``if``)."""
    handled = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            handled.append(True)

    class Server(ss.TCPServer):
        def verify_request(self, request, client_address):
            return verdict

    with Server((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address):
            server.handle_request()
    assert handled == ([True] if verdict else [])


def test_verify_request_false_in_serve_forever_then_serving_continues(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=reply_ok)
    verdicts = [False, True]

    class Server2(Server):
        def verify_request(self, request, client_address):
            super().verify_request(request, client_address)
            return verdicts.pop(0)

    server = Server2(transport.address, Handler)
    with util.background_server(server):
        with transport.connect(server) as client:
            if transport.kind != "udp":
                assert transport.reply(client) == b""
        assert util.wait_until(lambda: "close_request" in rec.names())
        with transport.connect(server) as client:
            assert transport.reply(client) == b"ok"
    calls = [c for c in rec.calls if c != ("service_actions",)]
    assert calls == CONSTRUCT + [
        ("get_request",),
        ("verify_request", "REQ", "ADDR"),
        ("shutdown_request", "REQ"),
        ("close_request", "REQ"),
    ] + CHAIN + [("server_close",)]


# ---------------------------------------------------------------------------
# Errors in handlers
# ---------------------------------------------------------------------------

ERROR_CHAIN = [
    ("get_request",),
    ("verify_request", "REQ", "ADDR"),
    ("process_request", "REQ", "ADDR"),
    ("finish_request", "REQ", "ADDR"),
    ("handler.__init__", "REQ", "ADDR", "SERVER"),
    ("handler.setup",),
    ("handler.handle",),
    ("handler.finish",),
    ("handle_error", "REQ", "ADDR", "exc_info=ValueError"),
    ("shutdown_request", "REQ"),
    ("close_request", "REQ"),
]


def _check_handle_error_output(err, address):
    lines = err.splitlines()
    assert lines[0] == "-" * 40
    assert lines[1] == "Exception occurred during processing of request from %s" % (address,)
    assert lines[2] == "Traceback (most recent call last):"
    assert any(line.strip() == 'raise ValueError("boom")' for line in lines), err
    assert "ValueError: boom" in lines
    assert lines[-1] == "-" * 40


def test_handler_exception_calls_handle_error(ss, transport, capfd):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=raise_value_error)
    with Server(transport.address, Handler) as server:
        with pending_request(transport, server) as client:
            assert server.handle_request() is None
            if transport.kind != "udp":
                assert transport.reply(client) == b""
    assert rec.calls == CONSTRUCT + ERROR_CHAIN + [("server_close",)]
    out, err = capfd.readouterr()
    assert out == ""
    _check_handle_error_output(err, rec.address)


def test_handler_exception_in_serve_forever_then_serving_continues(ss, transport, capfd):
    rec = Recorder()
    bodies = [raise_value_error, reply_ok]
    Server, Handler = recording_classes(ss, rec, transport.base,
                                        handle=lambda h: bodies.pop(0)(h))
    server = Server(transport.address, Handler)
    with util.background_server(server):
        with transport.connect(server) as client:
            if transport.kind != "udp":
                assert transport.reply(client) == b""
        assert util.wait_until(lambda: "close_request" in rec.names())
        first_address = rec.address
        with transport.connect(server) as client:
            assert transport.reply(client) == b"ok"
    calls = [c for c in rec.calls if c != ("service_actions",)]
    assert calls == CONSTRUCT + ERROR_CHAIN + CHAIN + [("server_close",)]
    _check_handle_error_output(capfd.readouterr().err, first_address)


def test_exception_in_setup_and_finish(ss):
    """An exception in setup() skips handle() and finish(); one in finish()
    still reaches handle_error()."""
    for failing in ("setup", "finish"):
        rec = Recorder()
        Server, Handler = recording_classes(ss, rec)

        # Defaults bind this iteration's values (B008 is that idiom here).
        def fail(self, _name=failing, _super=getattr(Handler, failing)):  # noqa: B008
            _super(self)
            raise ValueError(_name)

        setattr(Handler, failing, fail)

        class Quiet(Server):
            def handle_error(self, request, client_address):
                # Called within this iteration, so its rec is the current one.
                rec.add("handle_error", request, client_address)  # noqa: B023

        with Quiet((HOST, 0), Handler) as server:
            with util.tcp_connect(server.server_address):
                server.handle_request()
        expected_handler = {
            "setup": [("handler.setup",)],
            "finish": [("handler.setup",), ("handler.handle",), ("handler.finish",)],
        }[failing]
        assert rec.calls == CONSTRUCT + CHAIN[:5] + expected_handler + [
            ("handle_error", "REQ", "ADDR"),
            ("shutdown_request", "REQ"),
            ("close_request", "REQ"),
            ("server_close",),
        ], failing


def test_exception_in_verify_request_propagates(ss):
    """Only process_request() is guarded: an error in verify_request()
    leaves handle_request() (the request is not shut down)."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec)

    class Failing(Server):
        def verify_request(self, request, client_address):
            super().verify_request(request, client_address)
            raise ValueError("verify")

    with Failing((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address):
            with pytest.raises(ValueError, match="verify"):
                server.handle_request()
            rec.request.close()
    assert rec.calls == CONSTRUCT + CHAIN[:2] + [("server_close",)]


def test_exception_in_handle_error_propagates(ss):
    """If handle_error() itself raises, the error leaves handle_request()
    and shutdown_request() is not called."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, handle=raise_value_error)

    class Failing(Server):
        def handle_error(self, request, client_address):
            rec.add("handle_error", request, client_address)
            raise RuntimeError("handle_error failed")

    with Failing((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address):
            with pytest.raises(RuntimeError, match="handle_error failed") as info:
                server.handle_request()
            rec.request.close()
    assert isinstance(info.value.__context__, ValueError)
    assert rec.calls == CONSTRUCT + ERROR_CHAIN[:8] + [
        ("handle_error", "REQ", "ADDR"), ("server_close",)]


def test_get_request_oserror_is_ignored(ss):
    """An OSError from get_request() makes handle_request() return quietly."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec)

    class Failing(Server):
        def get_request(self):
            request, _address = super().get_request()
            request.close()
            raise ConnectionAbortedError("gone")

    with Failing((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address):
            assert server.handle_request() is None
    assert rec.calls == CONSTRUCT + [("get_request",), ("server_close",)]


def test_get_request_other_exception_propagates(ss):
    class Failing(ss.TCPServer):
        def get_request(self):
            request, _address = super().get_request()
            request.close()
            raise ValueError("not an OSError")

    with Failing((HOST, 0), ss.BaseRequestHandler) as server:
        with util.tcp_connect(server.server_address):
            with pytest.raises(ValueError, match="not an OSError"):
                server.handle_request()


@pytest.mark.parametrize("body", [raise_boom, raise_system_exit, raise_keyboard_interrupt],
                         ids=["BaseException", "SystemExit", "KeyboardInterrupt"])
def test_base_exception_propagates_from_handle_request(ss, transport, body, capfd):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=body)
    expected_type = {raise_boom: Boom, raise_system_exit: SystemExit,
                     raise_keyboard_interrupt: KeyboardInterrupt}[body]
    with Server(transport.address, Handler) as server:
        with pending_request(transport, server) as client:
            with pytest.raises(expected_type):
                server.handle_request()
            if transport.kind != "udp":
                # The request was shut down on the way out.
                assert transport.reply(client) == b""
    assert rec.calls == CONSTRUCT + CHAIN + [("server_close",)]
    assert "Exception occurred" not in capfd.readouterr().err


def test_base_exception_propagates_from_serve_forever(ss, transport):
    rec = Recorder()
    bodies = [raise_boom, reply_ok]
    Server, Handler = recording_classes(ss, rec, transport.base,
                                        handle=lambda h: bodies.pop(0)(h))
    with Server(transport.address, Handler) as server:
        call = util.ThreadCall(server.serve_forever, poll_interval=0.05)
        with transport.connect(server) as client:
            assert call.join(TIMEOUT), "serve_forever() did not stop"
            assert isinstance(call.exc, Boom)
            if transport.kind != "udp":
                assert transport.reply(client) == b""
        calls = [c for c in rec.calls if c != ("service_actions",)]
        assert calls == CONSTRUCT + CHAIN
        # The server still works afterwards.
        with util.background_server(server, close=False):
            with transport.connect(server) as client:
                assert transport.reply(client) == b"ok"


# ---------------------------------------------------------------------------
# Hooks overridden on the instance
# ---------------------------------------------------------------------------

def _instance_hooks(server, rec, names):
    for name in names:
        original = getattr(server, name)

        def hook(*args, _name=name, _original=original):
            rec.add(_name, *args)
            return _original(*args)

        setattr(server, name, hook)


INSTANCE_HOOKS = ["get_request", "verify_request", "process_request", "finish_request",
                  "shutdown_request", "close_request"]


def test_instance_hooks_via_handle_request(ss, transport):
    rec = Recorder()

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            reply_ok(self)

    with getattr(ss, transport.base)(transport.address, Handler) as server:
        rec.server = server
        _instance_hooks(server, rec, INSTANCE_HOOKS)
        # get_request is wrapped too: learn the request from verify_request.
        original_verify = server.verify_request

        def verify(request, client_address):
            rec.request, rec.address = request, client_address
            return original_verify(request, client_address)

        server.verify_request = verify
        with pending_request(transport, server) as client:
            server.handle_request()
            assert transport.reply(client) == b"ok"
    assert rec.calls == [
        ("get_request",),
        ("verify_request", "REQ", "ADDR"),
        ("process_request", "REQ", "ADDR"),
        ("finish_request", "REQ", "ADDR"),
        ("shutdown_request", "REQ"),
        ("close_request", "REQ"),
    ]


def test_instance_hooks_via_serve_forever(ss, transport):
    rec = Recorder()

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            reply_ok(self)

    server = getattr(ss, transport.base)(transport.address, Handler)
    rec.server = server
    _instance_hooks(server, rec, INSTANCE_HOOKS + ["service_actions"])
    original_verify = server.verify_request

    def verify(request, client_address):
        rec.request, rec.address = request, client_address
        return original_verify(request, client_address)

    server.verify_request = verify
    with util.background_server(server):
        with transport.connect(server) as client:
            assert transport.reply(client) == b"ok"
        assert util.wait_until(lambda: "service_actions" in rec.names())
    calls = [c for c in rec.calls if c != ("service_actions",)]
    assert calls == [
        ("get_request",),
        ("verify_request", "REQ", "ADDR"),
        ("process_request", "REQ", "ADDR"),
        ("finish_request", "REQ", "ADDR"),
        ("shutdown_request", "REQ"),
        ("close_request", "REQ"),
    ]
    assert ("service_actions",) in rec.calls


def test_instance_verify_request_refuses(ss):
    handled = []
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            handled.append(True)

    server = ss.TCPServer((HOST, 0), Handler)
    server.verify_request = lambda request, client_address: seen.append(client_address)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as client:
            assert util.recv_until_eof(client) == b""
            assert seen == [client.getsockname()]
    assert handled == []


def test_instance_handle_error(ss, capfd):
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            raise ValueError("boom")

    with ss.TCPServer((HOST, 0), Handler) as server:
        server.handle_error = lambda request, client_address: seen.append(
            (client_address, sys.exc_info()[0]))
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            assert seen == [(client.getsockname(), ValueError)]
    assert capfd.readouterr().err == ""


def test_instance_handle_timeout(ss):
    seen = []
    with ss.TCPServer((HOST, 0), ss.BaseRequestHandler) as server:
        server.timeout = 0.05
        server.handle_timeout = lambda: seen.append("timeout")
        server.handle_request()
    assert seen == ["timeout"]


def test_instance_handle_request_noblock_is_used_by_serve_forever(ss):
    """A private hook, but some code wraps it; the stdlib's loop calls it."""
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"ok")

    server = ss.TCPServer((HOST, 0), Handler)
    original = server._handle_request_noblock

    def noblock():
        seen.append("noblock")
        return original()

    server._handle_request_noblock = noblock
    with util.background_server(server):
        assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
    assert seen == ["noblock"]


def test_subclass_handle_request_noblock_is_used(ss):
    seen = []

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"ok")

    class Server(ss.TCPServer):
        def _handle_request_noblock(self):
            seen.append("noblock")
            return super()._handle_request_noblock()

    server = Server((HOST, 0), Handler)
    with util.background_server(server):
        assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
    with server.__class__((HOST, 0), Handler) as server2:
        with util.tcp_connect(server2.server_address) as client:
            server2.handle_request()
            assert util.recv_until_eof(client) == b"ok"
    assert seen == ["noblock", "noblock"]


def test_request_handler_class_replaced_on_the_instance(ss):
    class First(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"first")

    class Second(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"second")

    server = ss.TCPServer((HOST, 0), First)
    with util.background_server(server):
        assert util.tcp_roundtrip(server.server_address, b"") == b"first"
        server.RequestHandlerClass = Second
        assert util.tcp_roundtrip(server.server_address, b"") == b"second"


def test_request_handler_class_can_be_any_callable(ss):
    seen = []

    def factory(request, client_address, server):
        seen.append((client_address, server))
        request.sendall(b"called")

    server = ss.TCPServer((HOST, 0), factory)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as client:
            assert util.recv_until_eof(client) == b"called"
            assert seen == [(client.getsockname(), server)]


# ---------------------------------------------------------------------------
# handle_request() and timeouts
# ---------------------------------------------------------------------------

def test_handle_request_timeout_calls_handle_timeout_once(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base)
    with Server(transport.address, Handler) as server:
        server.timeout = 0.1
        call = util.ThreadCall(server.handle_request)
        assert call.join(TIMEOUT), "handle_request() ignored server.timeout"
        assert call.exc is None
    assert rec.calls == CONSTRUCT + [("handle_timeout",), ("server_close",)]


def test_handle_request_returns_what_handle_timeout_returns(ss):
    class Server(ss.TCPServer):
        timeout = 0.05

        def handle_timeout(self):
            return "timed out"

    with Server((HOST, 0), ss.BaseRequestHandler) as server:
        assert server.handle_request() == "timed out"


def test_handle_request_class_timeout(ss):
    seen = []

    class Server(ss.UDPServer):
        timeout = 0.05

        def handle_timeout(self):
            seen.append("timeout")

    with Server((HOST, 0), ss.BaseRequestHandler) as server:
        server.handle_request()
        server.handle_request()
    assert seen == ["timeout", "timeout"]


# (socket timeout, server.timeout): handle_request() waits min() of those
# that are not None; every case here must time out well within TIMEOUT.
@pytest.mark.parametrize("sock_timeout,server_timeout", [
    (0.1, None),
    (None, 0.1),
    (0.1, 60),
    (60, 0.1),
    (0.0, None),
    (0.0, 60),
    (60, 0.0),
])
def test_handle_request_timeout_min_rule(ss, sock_timeout, server_timeout):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec)
    with Server((HOST, 0), Handler) as server:
        server.socket.settimeout(sock_timeout)
        server.timeout = server_timeout
        call = util.ThreadCall(server.handle_request)
        finished = call.join(TIMEOUT)
        if not finished:
            # Unblock the call before failing.
            util.tcp_connect(server.server_address).close()
            call.join(TIMEOUT)
        assert finished, "handle_request() did not use the smaller timeout"
        assert call.exc is None
    assert rec.calls == CONSTRUCT + [("handle_timeout",), ("server_close",)]


def test_handle_request_without_timeout_waits_for_a_request(ss):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, handle=reply_ok)
    with Server((HOST, 0), Handler) as server:
        assert server.timeout is None and server.socket.gettimeout() is None
        call = util.ThreadCall(server.handle_request)
        assert not call.join(0.3)
        assert rec.calls == CONSTRUCT
        with util.tcp_connect(server.server_address) as client:
            assert call.join(TIMEOUT)
            assert util.recv_until_eof(client) == b"ok"
    assert rec.calls == CONSTRUCT + CHAIN + [("server_close",)]


def test_handle_request_with_timeout_serves_a_request_that_comes(ss):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, handle=reply_ok)
    with Server((HOST, 0), Handler) as server:
        server.timeout = 30
        call = util.ThreadCall(server.handle_request)
        with util.tcp_connect(server.server_address) as client:
            assert call.join(TIMEOUT)
            assert util.recv_until_eof(client) == b"ok"
    assert "handle_timeout" not in rec.names()
    assert rec.calls == CONSTRUCT + CHAIN + [("server_close",)]


def test_serve_forever_ignores_timeout(ss):
    """serve_forever() never calls handle_timeout(), whatever self.timeout is."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec)
    server = Server((HOST, 0), Handler)
    server.timeout = 0.01
    with util.background_server(server, poll_interval=0.01):
        assert util.wait_until(lambda: rec.names().count("service_actions") >= 5)
    assert "handle_timeout" not in rec.names()


def test_handle_request_does_not_call_service_actions(ss):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec)
    with Server((HOST, 0), Handler) as server:
        server.timeout = 0.05
        server.handle_request()
        with util.tcp_connect(server.server_address):
            server.handle_request()
    assert "service_actions" not in rec.names()


# ---------------------------------------------------------------------------
# serve_forever(), service_actions() and shutdown()
# ---------------------------------------------------------------------------

def test_service_actions_called_with_short_poll_interval(ss):
    count = []

    class Server(ss.TCPServer):
        def service_actions(self):
            count.append(threading.current_thread())

    server = Server((HOST, 0), ss.BaseRequestHandler)
    with util.background_server(server, poll_interval=0.01) as srv:
        assert util.wait_until(lambda: len(count) >= 5), "service_actions() not called"
        # Called in the serving thread.
        assert count[0] is not threading.current_thread()
        assert count[0].name == "serve_forever"
    assert srv is server


def test_service_actions_exception_propagates_from_serve_forever(ss):
    class Server(ss.TCPServer):
        def service_actions(self):
            raise ValueError("service")

    with Server((HOST, 0), ss.BaseRequestHandler) as server:
        call = util.ThreadCall(server.serve_forever, poll_interval=0.01)
        assert call.join(TIMEOUT)
        assert isinstance(call.exc, ValueError)
        # serve_forever() left through its ``finally``: shutdown() does not block.
        stopper = util.ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT)


def test_shutdown_stops_serve_forever_which_can_run_again(ss, transport):
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, transport.base, handle=reply_ok)
    server = Server(transport.address, Handler)
    try:
        for _ in range(2):
            call = util.ThreadCall(server.serve_forever, poll_interval=0.05)
            with transport.connect(server) as client:
                assert transport.reply(client) == b"ok"
            stopper = util.ThreadCall(server.shutdown)
            assert stopper.join(TIMEOUT), "shutdown() did not return"
            assert call.join(TIMEOUT), "serve_forever() did not return"
            assert call.exc is None and call.result is None
    finally:
        server.server_close()
    calls = [c for c in rec.calls if c != ("service_actions",)]
    assert calls == CONSTRUCT + CHAIN + CHAIN + [("server_close",)]


def test_shutdown_before_serve_forever_makes_it_return_at_once(ss):
    """shutdown() from another thread before serve_forever() starts: it
    blocks until a serve_forever() runs, which then returns at once
    without serving (the stdlib's flag is already set)."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, handle=reply_ok)
    server = Server((HOST, 0), Handler)
    try:
        stopper = util.ThreadCall(server.shutdown)
        # shutdown() blocks: no serve_forever() has run yet.
        assert not stopper.join(0.2)
        # Wait until its flag is up (the name-mangled stdlib attribute).
        util.wait_until(lambda: getattr(server, "_BaseServer__shutdown_request", None) is True,
                        timeout=2)
        with util.tcp_connect(server.server_address) as client:
            assert util.wait_readable(server.socket)
            call = util.ThreadCall(server.serve_forever, poll_interval=0.05)
            finished = call.join(TIMEOUT)
            if not finished:
                server.shutdown()
            assert finished, "serve_forever() did not return at once"
            assert call.exc is None
            assert stopper.join(TIMEOUT), "shutdown() did not return"
            # The pending request was not served.
            assert "get_request" not in rec.names()
            # The next serve_forever() runs normally and serves it.
            with util.background_server(server, close=False):
                assert util.recv_until_eof(client) == b"ok"
    finally:
        server.server_close()
    assert [c for c in rec.calls if c != ("service_actions",)] == (
        CONSTRUCT + CHAIN + [("server_close",)])


def test_shutdown_after_serve_forever_returned(ss):
    """After a serve_forever()/shutdown() cycle, another shutdown() returns
    at once and makes the next serve_forever() return at once; the one after
    that serves again."""
    rec = Recorder()
    Server, Handler = recording_classes(ss, rec, handle=reply_ok)
    server = Server((HOST, 0), Handler)
    try:
        with util.background_server(server, close=False):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
        stopper = util.ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT), "shutdown() blocked after serve_forever() had returned"
        with util.tcp_connect(server.server_address) as client:
            assert util.wait_readable(server.socket)
            call = util.ThreadCall(server.serve_forever, poll_interval=0.05)
            finished = call.join(TIMEOUT)
            if not finished:
                server.shutdown()
            assert finished, "serve_forever() did not return at once"
            assert rec.names().count("get_request") == 1
            with util.background_server(server, close=False):
                assert util.recv_until_eof(client) == b"ok"
    finally:
        server.server_close()
    assert [c for c in rec.calls if c != ("service_actions",)] == (
        CONSTRUCT + CHAIN + CHAIN + [("server_close",)])


def test_shutdown_request_flag_set_from_a_handler(ss):
    """Code in the wild stops serve_forever() from inside a handler with
    ``server._BaseServer__shutdown_request = True``."""
    rec = Recorder()

    def stop(handler):
        handler.server._BaseServer__shutdown_request = True
        reply_ok(handler)

    bodies = [stop, reply_ok]
    Server, Handler = recording_classes(ss, rec, handle=lambda h: bodies.pop(0)(h))
    server = Server((HOST, 0), Handler)
    try:
        call = util.ThreadCall(server.serve_forever, poll_interval=0.05)
        assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
        finished = call.join(TIMEOUT)
        if not finished:
            server.shutdown()
        assert finished, "serve_forever() did not stop"
        assert call.exc is None
        # The flag was reset on the way out: serving works again.
        assert server._BaseServer__shutdown_request is False
        with util.background_server(server, close=False):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
    finally:
        server.server_close()
    names = rec.names()
    # The loop finished its iteration: service_actions() after the request.
    first = names.index("close_request")
    assert names[first + 1] == "service_actions"
    assert [c for c in rec.calls if c != ("service_actions",)] == (
        CONSTRUCT + CHAIN + CHAIN + [("server_close",)])


def test_shutdown_from_a_handler_thread_in_threading_server(ss):
    """The usual way to stop a server from a request: a ThreadingMixIn
    handler calls shutdown() (it would deadlock in a synchronous server)."""

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"bye")
            self.server.shutdown()

    with ss.ThreadingTCPServer((HOST, 0), Handler) as server:
        call = util.ThreadCall(server.serve_forever, poll_interval=0.05)
        assert util.tcp_roundtrip(server.server_address, b"") == b"bye"
        assert call.join(TIMEOUT), "serve_forever() did not stop"
        assert call.exc is None


def test_serve_forever_default_poll_interval_and_prompt_shutdown(ss):
    """serve_forever() with its default poll_interval stops on shutdown()."""
    with ss.TCPServer((HOST, 0), ss.BaseRequestHandler) as server:
        call = util.ThreadCall(server.serve_forever)
        assert not call.join(0.1)
        stopper = util.ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT)
        assert call.join(TIMEOUT)
        assert call.exc is None


def test_serve_forever_in_main_thread_with_shutdown_from_another(ss):
    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"ok")

    with ss.TCPServer((HOST, 0), Handler) as server:
        def client():
            result = util.tcp_roundtrip(server.server_address, b"")
            server.shutdown()
            return result

        call = util.ThreadCall(client)
        server.serve_forever(poll_interval=0.05)
        assert call.join(TIMEOUT)
        assert call.exc is None and call.result == b"ok"


def test_handle_error_default_output(ss, capfd):
    """BaseServer.handle_error() prints a framed traceback to stderr."""

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            raise ValueError("boom")

    server = ss.TCPServer((HOST, 0), Handler)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as client:
            address = client.getsockname()
            assert util.recv_until_eof(client) == b""
    out, err = capfd.readouterr()
    assert out == ""
    _check_handle_error_output(err, address)
    assert "in handle" in err


def test_handle_error_default_output_goes_to_sys_stderr(ss, capsys):
    """The traceback goes through sys.stderr (capturable, redirectable)."""

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            raise ValueError("boom")

    with ss.TCPServer((HOST, 0), Handler) as server:
        with util.tcp_connect(server.server_address) as client:
            address = client.getsockname()
            server.handle_request()
    _check_handle_error_output(capsys.readouterr().err, address)


def test_handle_error_called_directly(ss, capsys):
    """handle_error() formats whatever exception is being handled."""
    with ss.TCPServer((HOST, 0), ss.BaseRequestHandler) as server:
        try:
            raise ValueError("boom")
        except ValueError:
            server.handle_error(None, ("1.2.3.4", 5))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "-" * 40
    assert lines[1] == "Exception occurred during processing of request from ('1.2.3.4', 5)"
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-2] == "ValueError: boom"
    assert lines[-1] == "-" * 40
