"""fastserver's settings: checked where they are written, given by name to
the constructor, typed, and the expected errors logged in one line.

- Every setting is checked when the class is defined, when the server is
  constructed and, set later, when the loop or the pool starts; the message
  names the class and attribute, shows the value and says what is allowed
  (TypeError for a wrong type, ValueError for a value out of range).
  Never per request.
- The settings are keyword arguments of the servers' constructors, after
  the stdlib's positional parameters, checked with the rest.
- The type checker refuses a bad overload policy, a bad keyword and a bad
  shutdown() timeout.
- The default handle_error() logs a timeout, a line too long and a client
  that went away in one line each, and counts them; other errors keep the
  stdlib's traceback, and a handle_error() override still sees them all.

Every test runs on each fastserver variant (the stdlib has none of this).
"""
import gc
import http.server
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import threading

import pytest

from fastserver import _plan

import util
import variants
from util import HOST, TIMEOUT, background_server, open_fds, recv_until_eof, tcp_connect

pytestmark = pytest.mark.timeout(120)

HAS_FORK = hasattr(os, "fork")


def make_class(fs, base, **attributes):
    """A subclass of ``fs.<base>`` called MyServer (MyHandler for a
    handler) with ``attributes``: defining it runs the class checks."""
    if base == "PreforkTCPServer":
        from fastserver.workers import PreforkTCPServer as base_class
    else:
        base_class = getattr(fs, base)
    name = "MyHandler" if base.endswith("Handler") else "MyServer"
    return type(name, (base_class,), attributes)


# ---------------------------------------------------------------------------
# The rules: every bad value of the new user's report, and its neighbours
# ---------------------------------------------------------------------------

#: (server class, setting, bad value, error, what the message says is allowed)
BAD = [
    ("ThreadPoolTCPServer", "max_workers", 0, ValueError, "an int >= 1"),
    ("ThreadPoolTCPServer", "max_workers", -1, ValueError, "an int >= 1"),
    ("ThreadPoolTCPServer", "max_workers", "many", TypeError, "an int >= 1"),
    ("ThreadPoolTCPServer", "max_workers", 2.5, TypeError, "an int >= 1"),
    ("ThreadPoolTCPServer", "max_workers", True, TypeError, "an int >= 1"),
    ("ThreadPoolTCPServer", "max_queue", -1, ValueError, "None (4 per worker) or an int >= 0"),
    ("ThreadPoolTCPServer", "overload", "explode", ValueError, "one of 'wait', 'refuse'"),
    ("TCPServer", "overload", "explode", ValueError, "one of 'wait', 'refuse'"),
    ("TCPServer", "max_connections", -1, ValueError, "None (no limit) or an int >= 1"),
    ("TCPServer", "max_connections", 0, ValueError, "None (no limit) or an int >= 1"),
    ("TCPServer", "max_connections", "10", TypeError, "None (no limit) or an int >= 1"),
    ("TCPServer", "idle_timeout", -1, ValueError, "None (no timeout) or a number of seconds > 0"),
    ("TCPServer", "idle_timeout", 0, ValueError, "None (no timeout) or a number of seconds > 0"),
    ("TCPServer", "idle_timeout", float("nan"), ValueError,
     "None (no timeout) or a number of seconds > 0"),
    ("TCPServer", "idle_timeout", 1e300, ValueError,  # beyond what a socket's timeout holds
     "None (no timeout) or a number of seconds > 0"),
    ("TCPServer", "idle_timeout", "30", TypeError, "None (no timeout) or a number of seconds > 0"),
    ("TCPServer", "ssl_handshake_timeout", 0, ValueError,
     "None (the socket's own timeout) or a number of seconds > 0"),
    ("TCPServer", "ssl_context", "yes please", TypeError, "None or an ssl.SSLContext"),
    ("TCPServer", "tcp_nodelay", 1, TypeError, "True or False"),
    ("TCPServer", "tcp_nodelay", None, TypeError, "True or False"),
]
if HAS_FORK:
    BAD.append(("PreforkTCPServer", "workers", 0, ValueError, "an int >= 1"))

BAD_IDS = ["%s.%s=%r" % (base, name, value) for base, name, value, _, _ in BAD]


def message(owner, value, allowed):
    """The pattern of a setting's error message."""
    return "^%s must be %s, not %s$" % (re.escape(owner), re.escape(allowed),
                                        re.escape(repr(value)))


@pytest.mark.parametrize(("base", "name", "value", "error", "allowed"), BAD, ids=BAD_IDS)
def test_a_bad_class_attribute_fails_where_the_class_is_defined(fs, base, name, value, error,
                                                                allowed):
    with pytest.raises(error, match=message("MyServer.%s" % name, value, allowed)):
        make_class(fs, base, **{name: value})


@pytest.mark.parametrize(("base", "name", "value", "error", "allowed"), BAD, ids=BAD_IDS)
def test_a_bad_instance_attribute_fails_at_construction(fs, base, name, value, error, allowed):
    """Set on the instance before the constructor runs (a subclass's
    __init__ does that), a setting is checked with the rest."""

    def __init__(self, address, handler):
        setattr(self, name, value)
        super(server_class, self).__init__(address, handler)

    server_class = make_class(fs, base, __init__=__init__)
    with pytest.raises(error, match=message("MyServer.%s" % name, value, allowed)):
        server_class((HOST, 0), fs.StreamRequestHandler)


@pytest.mark.parametrize(("base", "name", "value", "error", "allowed"),
                         [bad for bad in BAD if bad[1] != "workers"],
                         ids=[i for i in BAD_IDS if ".workers=" not in i])
def test_a_bad_value_set_after_construction_fails_when_the_loop_starts(fs, base, name, value,
                                                                       error, allowed):
    """Not at every request: serve_forever() refuses it before serving.
    (PreforkMixIn's supervisor checks ``workers`` itself: test_workers.py.)"""
    with make_class(fs, base)((HOST, 0), fs.StreamRequestHandler) as server:
        setattr(server, name, value)
        with pytest.raises(error, match=message("MyServer.%s" % name, value, allowed)):
            server.serve_forever(poll_interval=0.05)


def test_a_property_is_checked_on_the_instance(fs):
    """A setting computed per instance (a descriptor) is left alone when
    the class is defined, and checked when the server is constructed."""

    class MyServer(fs.TCPServer):
        @property
        def max_connections(self):
            return self.wanted

        def __init__(self, address, handler, wanted):
            self.wanted = wanted
            super().__init__(address, handler)

    with MyServer((HOST, 0), fs.StreamRequestHandler, 10) as server:
        assert server.max_connections == 10
    with pytest.raises(ValueError, match=r"^MyServer\.max_connections must be None \(no limit\)"):
        MyServer((HOST, 0), fs.StreamRequestHandler, 0)


GOOD = [
    ("ThreadPoolTCPServer", "max_workers", 1),
    ("ThreadPoolTCPServer", "max_queue", 0),
    ("ThreadPoolTCPServer", "max_queue", None),
    ("ThreadPoolTCPServer", "overload", "refuse"),
    ("TCPServer", "max_connections", None),
    ("TCPServer", "max_connections", 1),
    ("TCPServer", "idle_timeout", 30),
    ("TCPServer", "idle_timeout", 0.25),
    ("TCPServer", "idle_timeout", None),
    ("TCPServer", "ssl_handshake_timeout", None),
    ("TCPServer", "tcp_nodelay", False),
    ("UDPServer", "overload", "refuse"),
]


@pytest.mark.parametrize(("base", "name", "value"), GOOD)
def test_good_values_are_taken_as_given(fs, base, name, value):
    server_class = make_class(fs, base, **{name: value})
    with server_class((HOST, 0), fs.StreamRequestHandler) as server:
        assert getattr(server, name) == value


def test_ssl_context_must_be_a_server_side_context(fs):
    import ssl

    with pytest.raises(ValueError, match=r"^MyServer\.ssl_context is a client-side context"):
        make_class(fs, "TCPServer", ssl_context=ssl.create_default_context())
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with make_class(fs, "TCPServer", ssl_context=server_side)((HOST, 0),
                                                               fs.StreamRequestHandler) as server:
        assert server.ssl_context is server_side
    with pytest.raises(ValueError, match=r"^MyServer\.ssl_context is set, but TLS needs a stream"):
        make_class(fs, "UDPServer", ssl_context=server_side)


def test_ssl_context_none_is_checked_without_importing_ssl(fs_native, variant):
    script = variants.CHILD_IMPORT + """
import sys
server = ss.TCPServer(("127.0.0.1", 0), ss.StreamRequestHandler)  # ssl_context = None
server.server_close()
print("ssl" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], env=variants.child_env(variant),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------
# The handler's max_line_length
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-5, ValueError),
                                              ("64k", TypeError), (1.5, TypeError)])
def test_max_line_length_fails_where_the_handler_is_defined(fs, value, error):
    with pytest.raises(error, match=message("MyHandler.max_line_length", value,
                                            "None (no limit) or an int >= 1")):
        make_class(fs, "StreamRequestHandler", max_line_length=value)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), ("64k", TypeError)])
def test_max_line_length_set_on_the_instance_fails_at_setup_naming_it(fs, value, error):
    errors = []

    class MyHandler(fs.StreamRequestHandler):
        def setup(self):
            self.max_line_length = value
            super().setup()

        def handle(self):
            self.wfile.write(self.rfile.readline())

    class Server(fs.TCPServer):
        def handle_error(self, request, client_address):
            errors.append(sys.exc_info()[1])

    with Server((HOST, 0), MyHandler) as server, background_server(server, close=False):
        assert util.tcp_roundtrip(server.server_address, b"hi\n") == b""
    assert len(errors) == 1
    assert type(errors[0]) is error
    assert str(errors[0]) == ("MyHandler.max_line_length must be None (no limit) or an int >= 1,"
                              " not %r" % (value,))
    assert errors[0].__suppress_context__  # the reader's own message is not shown


def test_the_default_and_none_are_fine(fs):
    class MyHandler(fs.StreamRequestHandler):
        max_line_length = None

    assert fs.StreamRequestHandler.max_line_length == 65536
    assert MyHandler.max_line_length is None


# ---------------------------------------------------------------------------
# Mix-ins on servers that are not fastserver's
# ---------------------------------------------------------------------------

def test_the_pool_mixin_checks_its_settings_on_the_stdlibs_servers(fs):
    with pytest.raises(ValueError, match=r"^PoolHTTPServer\.max_workers must be an int >= 1"):

        class PoolHTTPServer(fs.ThreadPoolMixIn, http.server.HTTPServer):
            max_workers = 0

    class Fine(fs.ThreadPoolMixIn, http.server.HTTPServer):
        max_workers = 2

    assert Fine.max_workers == 2


# ---------------------------------------------------------------------------
# Settings as keyword arguments
# ---------------------------------------------------------------------------

def test_keywords_become_instance_attributes(fs):
    with fs.ThreadPoolTCPServer((HOST, 0), fs.StreamRequestHandler,
                                max_workers=4, overload="refuse") as server:
        assert (server.max_workers, server.overload) == (4, "refuse")
        assert vars(server)["max_workers"] == 4
        assert server.pool_status().max_workers == 4
    assert fs.ThreadPoolTCPServer.overload == "wait"  # the class is untouched
    with fs.TCPServer((HOST, 0), fs.StreamRequestHandler,
                      max_connections=100, idle_timeout=30) as server:
        plan = _plan.plan_for(server)
        assert (plan.max_connections, plan.idle_timeout) == (100, 30)


def test_keywords_serve(fs):
    """A server configured by keywords serves by them: idle_timeout reaches
    the connection."""
    seen = []

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            seen.append(self.request.gettimeout())
            self.request.sendall(b"ok")

    with fs.ThreadPoolTCPServer((HOST, 0), Handler, max_workers=2, idle_timeout=7.5) as server:
        with background_server(server, close=False):
            assert util.tcp_roundtrip(server.server_address, b"") == b"ok"
    assert seen == [7.5]


def test_keywords_are_set_before_server_bind(fs):
    """A subclass's server_bind() (http.server's reads its address there)
    sees the keyword values."""
    seen = []

    class MyServer(fs.TCPServer):
        def server_bind(self):
            seen.append(self.idle_timeout)
            super().server_bind()

    with MyServer((HOST, 0), fs.StreamRequestHandler, idle_timeout=3) as server:
        assert server.idle_timeout == 3
    assert seen == [3]


def test_bind_and_activate_keeps_its_place(fs):
    server = fs.TCPServer((HOST, 0), fs.StreamRequestHandler, False, max_connections=3)
    try:
        assert server.socket.getsockname()[1] == 0  # not bound: the stdlib's positional
        assert server.max_connections == 3
    finally:
        server.server_close()
    with pytest.raises(TypeError):  # a setting cannot be passed by position
        fs.TCPServer((HOST, 0), fs.StreamRequestHandler, True, 100)


@pytest.mark.parametrize(("base", "name", "value", "error", "allowed"), BAD, ids=BAD_IDS)
def test_a_bad_keyword_fails_at_construction_and_leaves_no_socket(fs, base, name, value, error,
                                                                  allowed):
    server_class = make_class(fs, base)
    fds = open_fds()
    with pytest.raises(error, match=message("MyServer.%s" % name, value, allowed)):
        server_class((HOST, 0), fs.StreamRequestHandler, **{name: value})
    assert open_fds() == fds


def test_max_connections_zero_is_refused_not_read_as_no_limit(fs):
    """0 once meant "no limit" in silence; None says that."""
    with pytest.raises(ValueError, match=r"None \(no limit\) or an int >= 1, not 0$"):
        fs.TCPServer((HOST, 0), fs.StreamRequestHandler, max_connections=0)
    with fs.TCPServer((HOST, 0), fs.StreamRequestHandler, max_connections=None) as server:
        assert _plan.plan_for(server).max_connections == 0  # the plan's "no limit"


def test_an_unknown_keyword_is_a_type_error_naming_it(fs):
    fds = open_fds()
    with pytest.raises(TypeError, match=r"^TCPServer\(\) got an unexpected keyword argument "
                                        r"'max_workers' \(its settings: idle_timeout, "
                                        r"max_connections, overload, ssl_context, "
                                        r"ssl_handshake_timeout, tcp_nodelay\)$"):
        fs.TCPServer((HOST, 0), fs.StreamRequestHandler, max_workers=4)
    with pytest.raises(TypeError, match=r"^ThreadPoolTCPServer\(\) got an unexpected keyword "
                                        r"argument 'max_worker' "):
        fs.ThreadPoolTCPServer((HOST, 0), fs.StreamRequestHandler, max_worker=4)
    assert open_fds() == fds  # refused before any socket was made


def test_a_datagram_server_refuses_stream_keywords(fs):
    for name, value in (("max_connections", 10), ("idle_timeout", 5), ("tcp_nodelay", False)):
        with pytest.raises(TypeError, match=r"^UDPServer\(\) got the keyword argument '%s', "
                                            r"a setting of stream servers only$" % name):
            fs.UDPServer((HOST, 0), fs.DatagramRequestHandler, **{name: value})
    with fs.ThreadPoolUDPServer((HOST, 0), fs.DatagramRequestHandler,
                                max_workers=2, overload="refuse") as server:
        assert server.overload == "refuse"


def test_a_server_of_its_own_checks_at_construction(fs):
    """A BaseServer subclass that makes no socket (TCPServer checks after
    binding; this one when BaseServer's constructor ends)."""

    class MyServer(fs.BaseServer):
        pass

    server = MyServer(("nowhere", 0), fs.BaseRequestHandler, overload="refuse")
    assert server.overload == "refuse"
    with pytest.raises(ValueError, match=r"^MyServer\.ssl_handshake_timeout must be None"):
        MyServer(("nowhere", 0), fs.BaseRequestHandler, ssl_handshake_timeout=-1)
    with pytest.raises(TypeError, match=r"^MyServer\(\) got an unexpected keyword argument "
                                        r"'idle_timeout' \(its settings: overload, "
                                        r"ssl_handshake_timeout\)$"):
        MyServer(("nowhere", 0), fs.BaseRequestHandler, idle_timeout=3)


@pytest.mark.skipif(not HAS_FORK, reason="no fork()")
def test_prefork_takes_workers_by_keyword(fs):
    from fastserver.workers import PreforkMixIn

    class Server(PreforkMixIn, fs.ThreadPoolTCPServer):
        pass

    with Server((HOST, 0), fs.StreamRequestHandler, workers=2, max_workers=3) as server:
        assert (server.workers, server.max_workers) == (2, 3)


def test_from_socket_takes_keywords(fs):
    listener = socket.create_server((HOST, 0))
    with fs.ThreadPoolTCPServer.from_socket(listener, fs.StreamRequestHandler,
                                            max_workers=2) as server:
        assert server.max_workers == 2 and server.socket is listener
    listener = socket.create_server((HOST, 0))
    with listener:
        with pytest.raises(ValueError, match=r"^ThreadPoolTCPServer\.max_workers"):
            fs.ThreadPoolTCPServer.from_socket(listener, fs.StreamRequestHandler, max_workers=0)
        assert listener.getsockname()[1] > 0  # left untouched


def test_subclasses_with_the_stdlibs_constructor_signature(fs):
    """http.server's way: a subclass that adds to server_bind() and keeps
    the stdlib's signature, made by from_socket()."""

    class MyHTTPServer(fs.ThreadingTCPServer):
        def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True):
            super().__init__(server_address, RequestHandlerClass, bind_and_activate)

        def server_bind(self):
            super().server_bind()
            self.server_name = "here"

    listener = socket.create_server((HOST, 0))
    with MyHTTPServer.from_socket(listener, http.server.BaseHTTPRequestHandler) as server:
        assert server.server_name == "here" and server.socket is listener


def test_from_fd_gives_the_fd_back_when_the_constructor_refuses(fs):
    """As when the fd is not suitable: the caller's fd stays open, also once
    the socket from_fd() made for it is collected."""
    listener = socket.create_server((HOST, 0))
    try:
        with pytest.raises(ValueError, match=r"^ThreadPoolTCPServer\.max_workers") as info:
            fs.ThreadPoolTCPServer.from_fd(listener.fileno(), fs.StreamRequestHandler,
                                           max_workers=0)
        del info  # nor does the socket from_fd made close it when collected
        gc.collect()
        with tcp_connect(listener.getsockname()):  # the caller's fd, still listening
            pass
    finally:
        listener.close()


# ---------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------

def test_the_type_checker_refuses_what_would_fail(tmp_path):
    """mypy --strict on a user's program: each line that would fail at run
    time is an error, the good ones are not."""
    api = pytest.importorskip("mypy.api")
    program = tmp_path / "user.py"
    program.write_text(textwrap.dedent("""\
        import fastserver

        class Exploding(fastserver.ThreadPoolTCPServer):
            overload = "explode"  # line 4

        class Refusing(fastserver.ThreadPoolTCPServer):
            overload = "refuse"
            max_workers = 8

        def main() -> None:
            handler = fastserver.StreamRequestHandler
            server = fastserver.ThreadPoolTCPServer(("127.0.0.1", 0), handler,
                                                    max_workers=4, overload="refuse")
            server.shutdown(timeout="soon")  # line 14
            server.shutdown(timeout=5.0)
            fastserver.TCPServer(("127.0.0.1", 0), handler, idle_timeout="30")  # line 16
            fastserver.TCPServer(("127.0.0.1", 0), handler, overload="explode")  # line 17
            fastserver.TCPServer(("127.0.0.1", 0), handler, max_worker=3)  # line 18
            fastserver.TCPServer(("127.0.0.1", 0), handler, max_connections=10, idle_timeout=30)
            fastserver.UDPServer(("127.0.0.1", 0), handler, False, overload="wait")
        """))
    stdout, stderr, _ = api.run([str(program), "--strict", "--python-version", "3.10",
                                 "--cache-dir", str(tmp_path / "cache"),
                                 "--python-executable", sys.executable])
    lines = sorted({int(line.split(":")[1]) for line in stdout.splitlines()
                    if ": error:" in line})
    assert lines == [4, 14, 16, 17, 18], stdout + stderr


# ---------------------------------------------------------------------------
# The expected errors: one line each, counted
# ---------------------------------------------------------------------------

def requests_log(caplog):
    return [r for r in caplog.records if r.name == "fastserver.requests"]


def check_one_line(caplog, level, pattern, client):
    records = requests_log(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert record.levelno == level and record.exc_info is None
    text = record.getMessage()
    assert "\n" not in text
    assert re.fullmatch(pattern % re.escape(described(client)), text), text


def described(sockname):
    """A client as the log lines write it (tls.describe_client)."""
    host, port = sockname[:2]
    return "%s:%d" % (host, port)


def serve_one_silent_client(server):
    """A client that connects and says nothing until the server closes it;
    its address."""
    with background_server(server, close=False):
        with tcp_connect(server.server_address) as client:
            address = client.getsockname()
            assert recv_until_eof(client) == b""
        # The connection is closed after handle_error() has run.
        assert util.wait_until(lambda: sum(server.quiet_errors.values()) >= 1)
    return address


def test_quiet_errors_start_at_zero(fs):
    with fs.TCPServer((HOST, 0), fs.StreamRequestHandler) as server:
        assert server.quiet_errors == {"timeout": 0, "line_too_long": 0, "reset": 0}


@pytest.mark.parametrize("path", ["core", "get_request override"])
def test_an_idle_timeout_is_one_warning(fs, path, caplog, capfd):
    class Handler(fs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()

    class Server(fs.ThreadingTCPServer):
        idle_timeout = 0.2
        if path != "core":
            def get_request(self):
                return super().get_request()

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with Server((HOST, 0), Handler) as server:
            client = serve_one_silent_client(server)
    check_one_line(caplog, logging.WARNING,
                   r"%s timed out: no progress for 0\.2 s \(Server\.idle_timeout\)", client)
    assert server.quiet_errors == {"timeout": 1, "line_too_long": 0, "reset": 0}
    assert "Traceback" not in capfd.readouterr().err


def test_the_handlers_own_timeout_is_named(fs, caplog):
    class MyHandler(fs.StreamRequestHandler):
        timeout = 0.2

        def handle(self):
            self.rfile.readline()

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with fs.TCPServer((HOST, 0), MyHandler, idle_timeout=30) as server:
            client = serve_one_silent_client(server)
    check_one_line(caplog, logging.WARNING,
                   r"%s timed out: no progress for 0\.2 s \(MyHandler\.timeout\)", client)
    assert server.quiet_errors["timeout"] == 1


@pytest.mark.parametrize("error", [TimeoutError("the database did not answer"),
                                   TimeoutError()],  # a future's result(timeout=...)
                         ids=["message", "none"])
def test_another_timeout_keeps_its_traceback(fs, error, caplog, capfd):
    """A TimeoutError that is not a socket's (the handler's own wait on
    something else) is an error like any other, on a connection with an
    idle_timeout too."""

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            raise error

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with fs.TCPServer((HOST, 0), Handler, idle_timeout=30) as server:
            with background_server(server, close=False):
                assert util.tcp_roundtrip(server.server_address, b"") == b""
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert ("TimeoutError: %s" % error).rstrip(": ") in err
    assert requests_log(caplog) == []
    assert server.quiet_errors["timeout"] == 0


def test_a_line_too_long_is_one_warning(fs, caplog, capfd):
    class MyHandler(fs.StreamRequestHandler):
        max_line_length = 16

        def handle(self):
            self.wfile.write(self.rfile.readline())

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with fs.TCPServer((HOST, 0), MyHandler) as server:
            with background_server(server, close=False):
                with tcp_connect(server.server_address) as client:
                    address = client.getsockname()
                    client.sendall(b"x" * 100 + b"\n")
                    assert recv_until_eof(client) == b""
                assert util.wait_until(lambda: server.quiet_errors["line_too_long"] == 1)
    check_one_line(caplog, logging.WARNING,
                   r"%s sent a line longer than 16 bytes \(MyHandler\.max_line_length\)", address)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("error", [ConnectionResetError, BrokenPipeError, ConnectionAbortedError])
def test_a_client_that_went_away_is_one_info_line(fs, error, caplog, capfd):
    class Handler(fs.BaseRequestHandler):
        def handle(self):
            raise error(104, "as the kernel says it")

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with fs.TCPServer((HOST, 0), Handler) as server:
            with background_server(server, close=False):
                with tcp_connect(server.server_address) as client:
                    address = client.getsockname()
                    assert recv_until_eof(client) == b""
                assert util.wait_until(lambda: server.quiet_errors["reset"] == 1)
    check_one_line(caplog, logging.INFO,
                   r"%s went away mid-request: " + error.__name__
                   + r": \[Errno 104\] as the kernel says it", address)
    assert "Traceback" not in capfd.readouterr().err


def test_a_real_reset_is_counted(fs, caplog):
    """A client that resets its connection (SO_LINGER 0) while the handler
    writes to it."""
    got_line, reset = threading.Event(), threading.Event()

    class Handler(fs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            got_line.set()
            assert reset.wait(TIMEOUT)
            for _ in range(1000):  # until the kernel reports the reset
                self.wfile.write(b"x" * 65536)

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with fs.ThreadingTCPServer((HOST, 0), Handler) as server:
            with background_server(server, close=False):
                client = tcp_connect(server.server_address)
                client.sendall(b"go\n")
                assert got_line.wait(TIMEOUT)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                reset.set()
                assert util.wait_until(lambda: server.quiet_errors["reset"] == 1)
    (record,) = requests_log(caplog)
    assert record.levelno == logging.INFO
    assert "went away mid-request: " in record.getMessage()


def test_other_errors_keep_the_stdlibs_traceback(fs, caplog, capfd):
    class Handler(fs.BaseRequestHandler):
        def handle(self):
            raise ValueError("a bug")

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with fs.TCPServer((HOST, 0), Handler) as server:
            with background_server(server, close=False):
                with tcp_connect(server.server_address) as client:
                    address = client.getsockname()
                    assert recv_until_eof(client) == b""
    err = capfd.readouterr().err
    assert "Exception occurred during processing of request from %r" % (address,) in err
    assert "ValueError: a bug" in err
    assert requests_log(caplog) == []
    assert server.quiet_errors == {"timeout": 0, "line_too_long": 0, "reset": 0}


def test_an_override_of_handle_error_sees_every_error(fs, caplog):
    seen = []

    class Handler(fs.StreamRequestHandler):
        max_line_length = 4

        def handle(self):
            line = self.rfile.readline()
            if line == b"reset\n":
                raise ConnectionResetError("gone")
            self.rfile.readline()  # silent: idle_timeout

    class Server(fs.TCPServer):
        idle_timeout = 0.2

        def handle_error(self, request, client_address):
            seen.append(type(sys.exc_info()[1]).__name__)

    with caplog.at_level(logging.INFO, logger="fastserver"):
        with Server((HOST, 0), Handler) as server, background_server(server, close=False):
            assert util.tcp_roundtrip(server.server_address, b"far too long\n") == b""
            assert util.tcp_roundtrip(server.server_address, b"ok\n") == b""
    assert seen == ["LineTooLong", "TimeoutError"]
    assert requests_log(caplog) == []
    assert server.quiet_errors == {"timeout": 0, "line_too_long": 0, "reset": 0}


def test_counting_is_exact_under_concurrency(fs, caplog):
    """Many pool workers counting at once lose no count."""
    count = 200

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            raise ConnectionResetError("gone")

    with caplog.at_level(logging.WARNING, logger="fastserver"):  # INFO lines not kept
        with fs.ThreadPoolTCPServer((HOST, 0), Handler, max_workers=8) as server:
            with background_server(server, close=False):
                for _ in range(count):
                    with tcp_connect(server.server_address) as client:
                        client.recv(1)
                assert util.wait_until(lambda: server.quiet_errors["reset"] == count)
    assert server.quiet_errors["reset"] == count


def test_with_logging_unconfigured_a_timeout_is_one_line_on_stderr(fs_native, variant):
    """What the new user sees: the program configures no logging; a silent
    client costs one line on stderr, and a client reset none (INFO)."""
    script = variants.CHILD_IMPORT + """
import socket

class Handler(ss.StreamRequestHandler):
    def handle(self):
        if self.rfile.readline() == b"reset\\n":
            raise ConnectionResetError("gone")

with ss.TCPServer(("127.0.0.1", 0), Handler, idle_timeout=0.2) as server:
    with socket.create_connection(server.server_address) as client:
        server.handle_request()
    with socket.create_connection(server.server_address) as client:
        client.sendall(b"reset\\n")
        server.handle_request()
    print(server.quiet_errors["timeout"], server.quiet_errors["reset"])
"""
    result = subprocess.run([sys.executable, "-c", script], env=variants.child_env(variant),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("127.0.0.1:")
    assert lines[0].endswith(" timed out: no progress for 0.2 s (TCPServer.idle_timeout)")
