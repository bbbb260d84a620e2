"""The public API of socketserver, name for name and default for default.

Every test runs against the stdlib (the reference) and every fastserver
variant.  The literal tables below are CPython 3.13's; the stdlib variant
proves them (skipping what the running Python's stdlib does not have yet),
and fastserver must match them on every Python.
"""
import inspect
import os
import pickle
import select
import selectors
import socket
import socketserver
import sys

import pytest

import util
from util import open_fds

HOST = util.HOST
MISSING = "<missing>"

HAS_FORK = hasattr(os, "fork")
HAS_UNIX = hasattr(socket, "AF_UNIX")

# Every documented class of CPython 3.13's socketserver.
DOCUMENTED_NAMES = [
    "BaseServer", "TCPServer", "UDPServer", "UnixStreamServer",
    "UnixDatagramServer", "ForkingMixIn", "ThreadingMixIn",
    "ForkingTCPServer", "ForkingUDPServer", "ThreadingTCPServer",
    "ThreadingUDPServer", "ForkingUnixStreamServer",
    "ForkingUnixDatagramServer", "ThreadingUnixStreamServer",
    "ThreadingUnixDatagramServer", "BaseRequestHandler",
    "StreamRequestHandler", "DatagramRequestHandler",
]

# CPython 3.13's __all__ on a platform with fork() and AF_UNIX.
ALL_3_13 = [
    "BaseServer", "TCPServer", "UDPServer",
    "ThreadingUDPServer", "ThreadingTCPServer",
    "BaseRequestHandler", "StreamRequestHandler",
    "DatagramRequestHandler", "ThreadingMixIn",
    "ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn",
    "UnixStreamServer", "UnixDatagramServer",
    "ThreadingUnixStreamServer", "ThreadingUnixDatagramServer",
    "ForkingUnixStreamServer", "ForkingUnixDatagramServer",
]

# Names (and attributes) newer than some supported Python's stdlib.
NEWER_NAMES = {
    "ForkingUnixStreamServer": (3, 12),
    "ForkingUnixDatagramServer": (3, 12),
}
NEWER_ATTRIBUTES = {
    "allow_reuse_port": (3, 11),
}

# __bases__ of every class, by name (CPython 3.13).
BASES = {
    "BaseServer": ("object",),
    "TCPServer": ("BaseServer",),
    "UDPServer": ("TCPServer",),
    "UnixStreamServer": ("TCPServer",),
    "UnixDatagramServer": ("UDPServer",),
    "ForkingMixIn": ("object",),
    "ThreadingMixIn": ("object",),
    "ForkingTCPServer": ("ForkingMixIn", "TCPServer"),
    "ForkingUDPServer": ("ForkingMixIn", "UDPServer"),
    "ThreadingTCPServer": ("ThreadingMixIn", "TCPServer"),
    "ThreadingUDPServer": ("ThreadingMixIn", "UDPServer"),
    "ForkingUnixStreamServer": ("ForkingMixIn", "UnixStreamServer"),
    "ForkingUnixDatagramServer": ("ForkingMixIn", "UnixDatagramServer"),
    "ThreadingUnixStreamServer": ("ThreadingMixIn", "UnixStreamServer"),
    "ThreadingUnixDatagramServer": ("ThreadingMixIn", "UnixDatagramServer"),
    "BaseRequestHandler": ("object",),
    "StreamRequestHandler": ("BaseRequestHandler",),
    "DatagramRequestHandler": ("BaseRequestHandler",),
}

# The class attributes checked; MISSING means the class has no such attribute.
ATTRIBUTES = [
    "address_family", "socket_type", "request_queue_size",
    "allow_reuse_address", "allow_reuse_port", "timeout", "max_packet_size",
    "max_children", "active_children", "block_on_close", "daemon_threads",
    "rbufsize", "wbufsize", "disable_nagle_algorithm",
]

_TCP = {
    "address_family": socket.AF_INET, "socket_type": socket.SOCK_STREAM,
    "request_queue_size": 5, "allow_reuse_address": False,
    "allow_reuse_port": False, "timeout": None,
}
_UDP = dict(_TCP, socket_type=socket.SOCK_DGRAM, max_packet_size=8192)
_UNIX_STREAM = dict(_TCP, address_family=getattr(socket, "AF_UNIX", None))
_UNIX_DGRAM = dict(_UDP, address_family=getattr(socket, "AF_UNIX", None))
_FORKING = {"timeout": 300, "max_children": 40, "active_children": None,
            "block_on_close": True}
_THREADING = {"daemon_threads": False, "block_on_close": True}

DEFAULTS = {
    "BaseServer": {"timeout": None},
    "TCPServer": _TCP,
    "UDPServer": _UDP,
    "UnixStreamServer": _UNIX_STREAM,
    "UnixDatagramServer": _UNIX_DGRAM,
    "ForkingMixIn": _FORKING,
    "ThreadingMixIn": _THREADING,
    "ForkingTCPServer": dict(_TCP, **_FORKING),
    "ForkingUDPServer": dict(_UDP, **_FORKING),
    "ThreadingTCPServer": dict(_TCP, **_THREADING),
    "ThreadingUDPServer": dict(_UDP, **_THREADING),
    "ForkingUnixStreamServer": dict(_UNIX_STREAM, **_FORKING),
    "ForkingUnixDatagramServer": dict(_UNIX_DGRAM, **_FORKING),
    "ThreadingUnixStreamServer": dict(_UNIX_STREAM, **_THREADING),
    "ThreadingUnixDatagramServer": dict(_UNIX_DGRAM, **_THREADING),
    "BaseRequestHandler": {},
    "StreamRequestHandler": {"rbufsize": -1, "wbufsize": 0, "timeout": None,
                             "disable_nagle_algorithm": False},
    "DatagramRequestHandler": {},
}

# Methods whose signature is compared (public ones plus these).
EXTRA_METHODS = {"__init__", "__enter__", "__exit__", "_handle_request_noblock"}


def _platform_has(name):
    if "Fork" in name and not HAS_FORK:
        return False
    return not ("Unix" in name and not HAS_UNIX)


def _skip_if_unavailable(ss, name):
    if not _platform_has(name):
        pytest.skip("%s needs fork()/AF_UNIX" % name)
    if ss is socketserver and not hasattr(socketserver, name):
        pytest.skip("the stdlib of Python %d.%d has no %s" % (sys.version_info[:2] + (name,)))


def _stdlib_methods(cls):
    """{name: function} for the methods of a stdlib class, MRO-resolved."""
    methods = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if inspect.isfunction(value) and (not name.startswith("_") or name in EXTRA_METHODS):
                methods[name] = value
    return methods


def _reference_class(name):
    """The stdlib class to compare with: the running stdlib's, or None."""
    return getattr(socketserver, name, None)


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_documented_name_exists(ss, name):
    _skip_if_unavailable(ss, name)
    cls = getattr(ss, name)
    assert inspect.isclass(cls)
    assert cls.__name__ == name


def test_all_contains_the_stdlib_all(fs):
    assert set(socketserver.__all__) <= set(fs.__all__)


def test_all_contains_the_3_13_names(ss):
    expected = [n for n in ALL_3_13 if _platform_has(n)]
    if ss is socketserver:
        expected = [n for n in expected if sys.version_info >= NEWER_NAMES.get(n, (0,))]
    assert set(expected) <= set(ss.__all__)
    for name in ss.__all__:
        assert hasattr(ss, name), name


def test_all_is_what_the_module_defines(ss):
    """CPython's MiscTestCase.test_all, for each variant: __all__ lists
    exactly the public objects whose __module__ is the module's name."""
    named_after_module = [
        name for name in dir(ss)
        if not name.startswith("_")
        and getattr(getattr(ss, name), "__module__", None) == ss.__name__]
    assert sorted(ss.__all__) == sorted(named_after_module)


def test_core_implementation_is_public_but_not_exported():
    import fastserver

    assert fastserver.CORE_IMPLEMENTATION in ("c", "python")
    assert "CORE_IMPLEMENTATION" not in fastserver.__all__


def test_public_classes_repr_and_pickle_by_the_module_name(ss):
    for name in ss.__all__:
        cls = getattr(ss, name)
        assert repr(cls) == "<class '%s.%s'>" % (ss.__name__, name)
        assert pickle.loads(pickle.dumps(cls)) is cls


def test_public_values_pickle(fs):
    status = fs.ThreadPoolStatus(workers=2, idle=1, queued=0, in_flight=1,
                                 max_workers=4, max_queue=8)
    assert pickle.loads(pickle.dumps(status)) == status
    error = pickle.loads(pickle.dumps(fs.LineTooLong(5, b"abcde")))
    assert type(error) is fs.LineTooLong
    assert (error.limit, error.data) == (5, b"abcde")


def test_star_import_exports_the_documented_names(ss):
    namespace = {}
    exec("from %s import *" % ss.__name__, namespace)
    for name in DOCUMENTED_NAMES:
        if not _platform_has(name):
            continue
        if ss is socketserver and not hasattr(socketserver, name):
            continue
        assert namespace[name] is getattr(ss, name)


# ---------------------------------------------------------------------------
# Class attributes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_class_attribute_defaults(ss, name):
    _skip_if_unavailable(ss, name)
    cls = getattr(ss, name)
    expected = DEFAULTS[name]
    for attr in ATTRIBUTES:
        if ss is socketserver and sys.version_info < NEWER_ATTRIBUTES.get(attr, (0,)):
            continue
        want = expected.get(attr, MISSING)
        got = getattr(cls, attr, MISSING)
        assert got == want, "%s.%s is %r, expected %r" % (name, attr, got, want)
        if want is None or isinstance(want, bool):
            assert got is want, "%s.%s is %r, expected %r" % (name, attr, got, want)
        elif want is not MISSING:
            assert type(got) is type(want), "%s.%s has type %s" % (name, attr, type(got))


@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_class_attributes_equal_the_running_stdlib(ss, name):
    _skip_if_unavailable(ss, name)
    reference = _reference_class(name)
    if reference is None:
        pytest.skip("no stdlib %s on this Python" % name)
    cls = getattr(ss, name)
    for attr in ATTRIBUTES:
        if hasattr(reference, attr):
            assert getattr(cls, attr) == getattr(reference, attr), attr


def test_forking_mixin_defaults_reach_the_instances(ss):
    if not HAS_FORK:
        pytest.skip("no fork()")
    with ss.ForkingTCPServer((HOST, 0), ss.BaseRequestHandler) as server:
        assert server.timeout == 300
        assert server.max_children == 40
        assert server.active_children is None
        assert server.block_on_close is True


def test_threading_mixin_defaults_reach_the_instances(ss):
    with ss.ThreadingTCPServer((HOST, 0), ss.BaseRequestHandler) as server:
        assert server.daemon_threads is False
        assert server.block_on_close is True
        assert server.timeout is None


# ---------------------------------------------------------------------------
# Inheritance
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_bases(ss, name):
    _skip_if_unavailable(ss, name)
    cls = getattr(ss, name)
    expected = tuple(object if b == "object" else getattr(ss, b) for b in BASES[name])
    assert cls.__bases__ == expected


@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_mro_of_documented_classes(ss, name):
    _skip_if_unavailable(ss, name)
    cls = getattr(ss, name)
    public = [k.__name__ for k in cls.__mro__ if k.__name__ in BASES or k is object]
    # The MRO the 3.13 bases produce.
    expected = [name]
    todo = list(BASES[name])
    # C3 over this small single-path-per-mixin hierarchy is a plain DFS.
    while todo:
        base = todo.pop(0)
        if base == "object":
            continue
        expected.append(base)
        todo[0:0] = list(BASES[base])
    expected.append("object")
    assert public == expected
    reference = _reference_class(name)
    if reference is not None:
        assert public == [k.__name__ for k in reference.__mro__]


def test_issubclass_relations(ss):
    assert issubclass(ss.TCPServer, ss.BaseServer)
    assert issubclass(ss.UDPServer, ss.TCPServer)
    assert issubclass(ss.ThreadingTCPServer, ss.ThreadingMixIn)
    assert issubclass(ss.ThreadingUDPServer, ss.UDPServer)
    assert issubclass(ss.StreamRequestHandler, ss.BaseRequestHandler)
    assert issubclass(ss.DatagramRequestHandler, ss.BaseRequestHandler)
    assert not issubclass(ss.DatagramRequestHandler, ss.StreamRequestHandler)
    assert not issubclass(ss.ThreadingMixIn, ss.BaseServer)
    if HAS_UNIX:
        assert issubclass(ss.UnixStreamServer, ss.TCPServer)
        assert issubclass(ss.UnixDatagramServer, ss.UDPServer)
        assert not issubclass(ss.UnixDatagramServer, ss.UnixStreamServer)
    if HAS_FORK:
        assert issubclass(ss.ForkingUDPServer, ss.ForkingMixIn)
        assert not issubclass(ss.ForkingMixIn, ss.BaseServer)


def test_user_defined_combinations(ss):
    """The documented way to build servers: the mix-in first."""

    class ThreadingUDP(ss.ThreadingMixIn, ss.UDPServer):
        pass

    with ThreadingUDP((HOST, 0), ss.DatagramRequestHandler) as server:
        assert server.socket.type == socket.SOCK_DGRAM
        assert server.daemon_threads is False
    if HAS_FORK:

        class ForkingTCP(ss.ForkingMixIn, ss.TCPServer):
            pass

        with ForkingTCP((HOST, 0), ss.StreamRequestHandler) as server:
            assert server.socket.type == socket.SOCK_STREAM
            assert server.max_children == 40


# ---------------------------------------------------------------------------
# Method signatures
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_method_signatures(ss, name):
    _skip_if_unavailable(ss, name)
    reference = _reference_class(name)
    if reference is None:
        pytest.skip("no stdlib %s on this Python to compare with" % name)
    cls = getattr(ss, name)
    for method, function in sorted(_stdlib_methods(reference).items()):
        assert hasattr(cls, method), "%s.%s is missing" % (name, method)
        attribute = getattr(cls, method)
        assert callable(attribute), "%s.%s is not callable" % (name, method)
        want = _untyped(inspect.signature(function))
        got = _untyped(inspect.signature(attribute))
        if ss is not socketserver and method in EXTENDED_SIGNATURES:
            want = EXTENDED_SIGNATURES[method]
            assert _accepts_stdlib_calls(got, _untyped(inspect.signature(function)))
        if ss is not socketserver and method in KEYWORD_EXTENDED and issubclass(cls, ss.BaseServer):
            want = _with_keywords(want, KEYWORD_EXTENDED[method])
        assert str(got) == str(want), "%s.%s%s, expected %s" % (name, method, got, want)


# fastserver's documented extensions of stdlib methods: new parameters with
# defaults, after the stdlib's, so every stdlib call means the same.
EXTENDED_SIGNATURES = {"shutdown": "(self, timeout=None)"}
#: And the servers' constructors take their settings: the stdlib's
#: parameters, in place, then the settings by name only (``**settings``), so
#: a positional call means what it means to the stdlib.
KEYWORD_EXTENDED = {"__init__": "settings"}


def _with_keywords(signature, name):
    """``signature`` with ``**name`` appended."""
    keywords = inspect.Parameter(name, inspect.Parameter.VAR_KEYWORD)
    return signature.replace(parameters=[*signature.parameters.values(), keywords])


def _untyped(signature):
    """``signature`` without annotations: fastserver's methods are annotated
    (the stdlib's are not); names, kinds and defaults must be the same."""
    return signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=signature.empty,
    )


def _accepts_stdlib_calls(got, want):
    got_params, want_params = list(got.parameters.values()), list(want.parameters.values())
    return got_params[: len(want_params)] == want_params and all(
        p.default is not inspect.Parameter.empty for p in got_params[len(want_params):]
    )


def test_forking_unix_signatures_are_the_3_13_ones(ss):
    """On Pythons without the stdlib ForkingUnix*, compare with ForkingTCPServer."""
    if not (HAS_FORK and HAS_UNIX):
        pytest.skip("needs fork() and AF_UNIX")
    for name in ("ForkingUnixStreamServer", "ForkingUnixDatagramServer"):
        _skip_if_unavailable(ss, name)
        cls = getattr(ss, name)
        for method, function in _stdlib_methods(socketserver.ForkingTCPServer).items():
            want = str(inspect.signature(function))
            if ss is not socketserver:  # the stdlib's own has no extensions
                want = EXTENDED_SIGNATURES.get(method, want)
                if method in KEYWORD_EXTENDED:
                    want = str(_with_keywords(inspect.signature(function),
                                              KEYWORD_EXTENDED[method]))
            assert str(_untyped(inspect.signature(getattr(cls, method)))) == want


# ---------------------------------------------------------------------------
# Server instances
# ---------------------------------------------------------------------------

def test_tcp_server_attributes(ss):
    class Handler(ss.BaseRequestHandler):
        pass

    with ss.TCPServer((HOST, 0), Handler) as server:
        host, port = server.server_address
        assert host == HOST
        assert isinstance(port, int) and port > 0
        assert server.server_address == server.socket.getsockname()
        assert type(server.server_address) is tuple
        assert isinstance(server.socket, socket.socket)
        assert server.socket.family == socket.AF_INET
        assert server.socket.type == socket.SOCK_STREAM
        assert server.RequestHandlerClass is Handler
        assert server.timeout is None
        assert server.socket.gettimeout() is None
        if hasattr(socket, "SO_ACCEPTCONN"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        # It listens: a client can connect.
        with util.tcp_connect(server.server_address):
            assert util.wait_readable(server.socket)


def test_udp_server_attributes(ss):
    with ss.UDPServer((HOST, 0), ss.DatagramRequestHandler) as server:
        host, port = server.server_address
        assert host == HOST and port > 0
        assert server.server_address == server.socket.getsockname()
        assert server.socket.family == socket.AF_INET
        assert server.socket.type == socket.SOCK_DGRAM
        assert server.RequestHandlerClass is ss.DatagramRequestHandler
        assert server.socket.gettimeout() is None
        if hasattr(socket, "SO_ACCEPTCONN"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0


def test_ipv6_server(ss):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    class TCP6(ss.TCPServer):
        address_family = socket.AF_INET6

    try:
        server = TCP6(("::1", 0), ss.BaseRequestHandler)
    except OSError as exc:
        pytest.skip("cannot bind ::1: %s" % exc)
    with server:
        assert server.socket.family == socket.AF_INET6
        assert len(server.server_address) == 4
        assert server.server_address[0] == "::1"
        assert server.server_address[1] > 0
        assert server.server_address == server.socket.getsockname()


def test_server_address_is_passed_through_before_binding(ss):
    address = (HOST, 0)
    server = ss.TCPServer(address, ss.BaseRequestHandler, bind_and_activate=False)
    try:
        assert server.server_address is address
        assert server.socket.getsockname() == ("0.0.0.0", 0)
    finally:
        server.server_close()


def test_bind_and_activate_false_then_manual(ss):
    server = ss.TCPServer((HOST, 0), ss.BaseRequestHandler, bind_and_activate=False)
    try:
        assert server.socket.getsockname()[1] == 0
        if hasattr(socket, "SO_ACCEPTCONN"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        # The documented reason for bind_and_activate=False: set options first.
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        server.server_bind()
        port = server.server_address[1]
        assert port > 0
        assert server.server_address == server.socket.getsockname()
        with pytest.raises(OSError):
            util.tcp_connect(server.server_address, timeout=2).close()
        server.server_activate()
        if hasattr(socket, "SO_ACCEPTCONN"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with util.tcp_connect(server.server_address):
            pass
    finally:
        server.server_close()


def test_bind_and_activate_false_udp(ss):
    server = ss.UDPServer((HOST, 0), ss.DatagramRequestHandler, bind_and_activate=False)
    try:
        server.server_bind()
        server.server_activate()
        assert server.server_address[1] > 0
        if hasattr(socket, "SO_ACCEPTCONN"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    finally:
        server.server_close()


def test_request_queue_size_is_the_listen_backlog(ss):
    seen = []

    class Server(ss.TCPServer):
        request_queue_size = 17

        def server_activate(self):
            self.socket = _ListenSpy(self.socket, seen)
            try:
                super().server_activate()
            finally:
                self.socket = self.socket.wrapped

    with Server((HOST, 0), ss.BaseRequestHandler):
        pass
    assert seen == [17]


class _ListenSpy:
    """Wraps a socket to record listen() backlogs."""

    def __init__(self, wrapped, seen):
        self.wrapped = wrapped
        self.seen = seen

    def listen(self, *args):
        self.seen.extend(args)
        return self.wrapped.listen(*args)

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


def test_constructor_failure_closes_the_socket(ss):
    calls = []
    sockets = []

    with ss.TCPServer((HOST, 0), ss.BaseRequestHandler) as taken:

        class Server(ss.TCPServer):
            def server_bind(self):
                sockets.append(self.socket)
                super().server_bind()

            def server_close(self):
                calls.append("server_close")
                super().server_close()

        with pytest.raises(OSError):
            Server(taken.server_address, ss.BaseRequestHandler)
    assert calls == ["server_close"]
    assert sockets[0].fileno() == -1


def test_constructor_failure_in_server_activate_propagates(ss):
    calls = []

    class Boom(Exception):
        pass

    class Server(ss.TCPServer):
        def server_activate(self):
            raise Boom()

        def server_close(self):
            calls.append("server_close")
            super().server_close()

    with pytest.raises(Boom):
        Server((HOST, 0), ss.BaseRequestHandler)
    assert calls == ["server_close"]


def test_context_manager(ss):
    before = open_fds()
    with ss.TCPServer((HOST, 0), ss.BaseRequestHandler) as server:
        assert isinstance(server, ss.TCPServer)
        sock = server.socket
        assert sock.fileno() >= 0
    assert sock.fileno() == -1
    assert server.socket.fileno() == -1
    assert open_fds() == before


def test_context_manager_enter_returns_the_server(ss):
    server = ss.UDPServer((HOST, 0), ss.DatagramRequestHandler)
    with server as entered:
        assert entered is server
    assert server.socket.fileno() == -1


def test_context_manager_does_not_swallow_exceptions(ss):
    class Oops(Exception):
        pass

    with pytest.raises(Oops):
        with ss.TCPServer((HOST, 0), ss.BaseRequestHandler) as server:
            raise Oops()
    assert server.socket.fileno() == -1


def test_exit_calls_server_close(ss):
    calls = []

    class Server(ss.TCPServer):
        def server_close(self):
            calls.append("server_close")
            super().server_close()

    server = Server((HOST, 0), ss.BaseRequestHandler)
    assert server.__enter__() is server
    assert not server.__exit__(None, None, None)
    assert calls == ["server_close"]


def test_base_server_context_manager(ss):
    calls = []

    class Server(ss.BaseServer):
        def server_close(self):
            calls.append("server_close")

    with Server(("ignored", 0), ss.BaseRequestHandler) as server:
        assert server.server_address == ("ignored", 0)
        assert server.RequestHandlerClass is ss.BaseRequestHandler
        assert not hasattr(server, "socket")
    assert calls == ["server_close"]


@pytest.mark.parametrize("kind", ["TCPServer", "UDPServer"])
def test_fileno(ss, kind):
    with getattr(ss, kind)((HOST, 0), ss.BaseRequestHandler) as server:
        assert server.fileno() == server.socket.fileno()
        assert isinstance(server.fileno(), int)
        # Usable by select() and selectors, as documented.
        select.select([server], [], [], 0)
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)


def test_fileno_after_close(ss):
    server = ss.TCPServer((HOST, 0), ss.BaseRequestHandler)
    server.server_close()
    assert server.fileno() == -1


@pytest.mark.parametrize("kind", ["TCPServer", "UDPServer", "ThreadingTCPServer",
                                  "ThreadingUDPServer", "ForkingTCPServer"])
def test_server_close_is_idempotent(ss, kind):
    if "Forking" in kind and not HAS_FORK:
        pytest.skip("no fork()")
    before = open_fds()
    server = getattr(ss, kind)((HOST, 0), ss.BaseRequestHandler)
    server.server_close()
    server.server_close()
    server.server_close()
    assert server.socket.fileno() == -1
    assert open_fds() == before


def test_server_close_after_serving_is_idempotent_and_leaks_nothing(ss):
    class Handler(ss.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())

    before = open_fds()
    server = ss.TCPServer((HOST, 0), Handler)
    with util.background_server(server, close=False):
        assert util.tcp_roundtrip(server.server_address, b"hi\n") == b"HI\n"
    server.server_close()
    server.server_close()
    assert open_fds() == before


def test_listening_socket_stays_blocking(ss):
    # While serve_forever() runs, the compiled core's fd may be O_NONBLOCK
    # (it accepts until EAGAIN); Python's view of the socket never changes,
    # and the fd is blocking again once the loop is over.
    server = ss.TCPServer((HOST, 0), ss.BaseRequestHandler)
    with util.background_server(server, close=False):
        util.tcp_roundtrip(server.server_address, b"")
        assert server.socket.gettimeout() is None
        util.tcp_roundtrip(server.server_address, b"")
    with server:
        assert server.socket.gettimeout() is None
        assert os.get_blocking(server.fileno())
    server = ss.TCPServer((HOST, 0), ss.BaseRequestHandler)
    with server:
        with util.tcp_connect(server.server_address):
            server.handle_request()
        assert server.socket.gettimeout() is None
        assert os.get_blocking(server.fileno())


# ---------------------------------------------------------------------------
# Unix sockets
# ---------------------------------------------------------------------------

needs_unix = pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")


@needs_unix
def test_unix_stream_server(ss):
    class Handler(ss.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline()[::-1])

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "s")
        server = ss.UnixStreamServer(path, Handler)
        assert server.server_address == path
        assert server.socket.family == socket.AF_UNIX
        assert server.socket.type == socket.SOCK_STREAM
        assert server.RequestHandlerClass is Handler
        assert os.path.exists(path)
        with util.background_server(server):
            assert util.unix_stream_roundtrip(path, b"abc\n") == b"\ncba"
        assert server.socket.fileno() == -1
        # Like the stdlib, server_close() does not remove the socket file.
        assert os.path.exists(path)


@needs_unix
def test_unix_datagram_server(ss):
    class Handler(ss.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read().upper())

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "d")
        server = ss.UnixDatagramServer(path, Handler)
        assert server.server_address == path
        assert server.socket.family == socket.AF_UNIX
        assert server.socket.type == socket.SOCK_DGRAM
        if hasattr(socket, "SO_ACCEPTCONN"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        with util.background_server(server):
            reply = util.unix_dgram_roundtrip(path, b"abc", os.path.join(tmp, "c"))
            assert reply == b"ABC"
        assert server.socket.fileno() == -1
        assert os.path.exists(path)


@needs_unix
def test_unix_server_bytes_path(ss):
    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "b").encode()
        with ss.UnixStreamServer(path, ss.BaseRequestHandler) as server:
            assert server.server_address == server.socket.getsockname()
            assert os.fsencode(server.server_address) == path


@needs_unix
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux abstract namespace")
def test_unix_server_abstract_namespace(ss):
    name = "\0fastserver-test-%d-%d" % (os.getpid(), id(ss))
    with ss.UnixStreamServer(name, ss.BaseRequestHandler) as server:
        assert server.server_address == name.encode()
        with util.unix_connect(name):
            pass


@needs_unix
def test_unix_server_path_in_use(ss):
    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "s")
        with ss.UnixStreamServer(path, ss.BaseRequestHandler):
            with pytest.raises(OSError):
                ss.UnixStreamServer(path, ss.BaseRequestHandler)


@needs_unix
@pytest.mark.parametrize("name", ["ThreadingUnixStreamServer", "ThreadingUnixDatagramServer",
                                  "ForkingUnixStreamServer", "ForkingUnixDatagramServer"])
def test_unix_mixin_servers_construct(ss, name):
    _skip_if_unavailable(ss, name)
    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "m")
        with getattr(ss, name)(path, ss.BaseRequestHandler) as server:
            assert server.server_address == path
            assert server.socket.family == socket.AF_UNIX


# ---------------------------------------------------------------------------
# allow_reuse_address / allow_reuse_port
# ---------------------------------------------------------------------------

def _reuse_port_supported(ss):
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")
    if ss is socketserver and not hasattr(socketserver.TCPServer, "allow_reuse_port"):
        pytest.skip("the stdlib of this Python has no allow_reuse_port")


@pytest.mark.parametrize("kind", ["TCPServer", "UDPServer"])
def test_sockopts_off_by_default(ss, kind):
    with getattr(ss, kind)((HOST, 0), ss.BaseRequestHandler) as server:
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        if hasattr(socket, "SO_REUSEPORT"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


@pytest.mark.parametrize("kind", ["TCPServer", "UDPServer"])
def test_allow_reuse_address_sets_so_reuseaddr(ss, kind):
    class Server(getattr(ss, kind)):
        allow_reuse_address = True

    with Server((HOST, 0), ss.BaseRequestHandler) as server:
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        if hasattr(socket, "SO_REUSEPORT"):
            assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


@pytest.mark.parametrize("kind", ["TCPServer", "UDPServer"])
def test_allow_reuse_port_sets_so_reuseport(ss, kind):
    _reuse_port_supported(ss)

    class Server(getattr(ss, kind)):
        allow_reuse_port = True

    with Server((HOST, 0), ss.BaseRequestHandler) as server:
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0


def test_allow_reuse_as_instance_attributes(ss):
    server = ss.TCPServer((HOST, 0), ss.BaseRequestHandler, bind_and_activate=False)
    try:
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    finally:
        server.server_close()


def test_allow_reuse_port_lets_two_servers_share_a_port(ss):
    _reuse_port_supported(ss)

    class Server(ss.TCPServer):
        allow_reuse_port = True

    with Server((HOST, 0), ss.BaseRequestHandler) as first:
        with Server(first.server_address, ss.BaseRequestHandler) as second:
            assert second.server_address == first.server_address


def test_without_reuse_port_the_port_is_taken(ss):
    with ss.TCPServer((HOST, 0), ss.BaseRequestHandler) as first:
        with pytest.raises(OSError):
            ss.TCPServer(first.server_address, ss.BaseRequestHandler)


def test_allow_reuse_address_rebinds_a_port_in_time_wait(ss):
    """The classic use: restart a server whose port has TIME_WAIT connections."""

    class Handler(ss.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"x")

    class Server(ss.TCPServer):
        allow_reuse_address = True

    server = Server((HOST, 0), Handler)
    address = server.server_address
    with server:
        with util.tcp_connect(address) as client:
            server.handle_request()  # the server closes first: TIME_WAIT on its side
            assert util.recv_until_eof(client) == b"x"
    with Server(address, Handler) as again:
        assert again.server_address == address
