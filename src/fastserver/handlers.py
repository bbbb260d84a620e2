"""Request handler classes: the stdlib's BaseRequestHandler,
StreamRequestHandler and DatagramRequestHandler."""
from __future__ import annotations

import socket
from io import BufferedIOBase, BytesIO
from typing import TYPE_CHECKING, Any, ClassVar

from . import _engine, _settings
from ._streams import SocketWriter as _SocketWriter  # the stdlib's name for it
from ._streams import open_reader as _open_reader
from .errors import LineTooLong as LineTooLong  # re-exported: fastserver.LineTooLong

if TYPE_CHECKING:
    import socketserver

    from ._typing import RequestType, RetAddress
    from .servers import BaseServer

    # Drop-in replacements of the stdlib's handlers: to the type checker,
    # subtypes of them (see servers.py); at run time they derive from object.
    _StdlibBaseRequestHandler = socketserver.BaseRequestHandler
else:
    _StdlibBaseRequestHandler = object


class BaseRequestHandler(_StdlibBaseRequestHandler):
    """Base class for request handler classes.

    This class is instantiated for each request to be handled.  The
    constructor sets the instance variables request, client_address
    and server, and then calls the handle() method.  To implement a
    specific service, all you need to do is to derive a class which
    defines a handle() method.
    """

    # ``request`` is typed Any, as in typeshed: a stream handler's is a
    # socket, a datagram handler's a (data, socket) pair, and a union here
    # would make every handler narrow it first.
    request: Any
    client_address: RetAddress
    server: BaseServer

    def __init__(
        self, request: RequestType, client_address: RetAddress, server: BaseServer
    ) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        pass

    def handle(self) -> None:
        pass

    def finish(self) -> None:
        pass


class StreamRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for stream sockets."""

    # Default buffer sizes for rfile, wfile.
    # We default rfile to buffered because otherwise it could be
    # really slow for large data (a getc() call per byte); we make
    # wfile unbuffered because (a) often after a write() we want to
    # read and we need to flush the line; (b) big writes to unbuffered
    # files are typically optimized by stdio even when big reads
    # aren't.
    rbufsize = -1
    wbufsize = 0

    # A timeout to apply to the request socket, if not None.
    timeout: float | None = None

    # Disable nagle algorithm for this socket, if True.
    # Use only when wbufsize != 0, to avoid small packets.
    disable_nagle_algorithm = False

    # fastserver: the longest line rfile.readline() (and iteration) returns
    # when the caller gives no size; beyond it LineTooLong (a ValueError)
    # is raised, so a client that never sends a newline cannot make the
    # server buffer without bound.  64 KiB, asyncio's StreamReader limit.
    # None: no limit (the stdlib's behaviour).
    max_line_length: int | None = 65536

    # fastserver: the settings (fastserver/_settings.py), checked when a
    # subclass is defined; an instance's own value, at setup() (see there).
    _fastserver_settings: ClassVar[tuple[str, ...]] = ("max_line_length",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _settings.check_class(cls)

    # The connected socket (``request``), typed Any as in typeshed.
    connection: Any
    # The socket's file objects, as in typeshed: the core's rfile and wfile
    # are registered as io.BufferedIOBase; an unbuffered rbufsize gives the
    # raw socket.SocketIO, which reads the same way.
    rfile: BufferedIOBase
    wfile: BufferedIOBase

    def setup(self) -> None:
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        try:
            self.rfile = _open_reader(self.connection, self.rbufsize, self.max_line_length)
        except (TypeError, ValueError):
            # fastserver: a bad max_line_length set on the instance (the
            # class's was checked when the class was defined) fails in the
            # reader; say which setting.  Checked on failure only: nothing
            # is added to a request that succeeds.
            _settings.blame_setting(self, "max_line_length")
            raise
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
        else:
            self.wfile = self.connection.makefile("wb", self.wbufsize)

    def finish(self) -> None:
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                # A final socket error may have occurred here, such as
                # the local error ECONNABORTED.
                pass
        self.wfile.close()
        self.rfile.close()


class DatagramRequestHandler(BaseRequestHandler):
    """Define self.rfile and self.wfile for datagram sockets."""

    packet: bytes
    socket: socket.socket
    rfile: BufferedIOBase
    wfile: BytesIO

    def setup(self) -> None:
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self) -> None:
        self.socket.sendto(self.wfile.getvalue(), self.client_address)


# The handlers' own steps, as each core has them.  The methods above are
# the specification and what the pure-Python core runs; the compiled core
# carries line-for-line copies (src/core/handlers.pxi) without the
# interpreter's frame per call, whose StreamRequestHandler.setup gives a
# plain socket the core's C rfile/wfile.  The engine's core switch swaps
# them as a whole; a subclass or an instance that overrides one still wins.
_STEPS = (
    (BaseRequestHandler, "__init__", "request_handler_init"),
    (StreamRequestHandler, "setup", "stream_handler_setup"),
    (StreamRequestHandler, "finish", "stream_handler_finish"),
    (DatagramRequestHandler, "setup", "datagram_handler_setup"),
    (DatagramRequestHandler, "finish", "datagram_handler_finish"),
)
_PYTHON_STEPS = {(cls, name): cls.__dict__[name] for cls, name, _ in _STEPS}


def _use_steps_of(core: object) -> None:
    """Give the handler classes ``core``'s copies of their steps (the Python
    methods above for a core that has none)."""
    # Replacing methods of a class after its definition: setattr(), since
    # type checkers (rightly) refuse plain assignments to methods.
    for cls, name, step in _STEPS:
        setattr(cls, name, getattr(core, step, _PYTHON_STEPS[cls, name]))


_engine.on_core_switch(_use_steps_of)
