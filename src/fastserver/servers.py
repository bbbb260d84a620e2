"""The server classes: the stdlib's API and hooks over fastserver's loop.

Everything a user can see or override is here, in Python, with the stdlib's
semantics (CPython 3.13's ``Lib/socketserver.py`` is the specification).
The loop itself lives in the core: ``serve_forever`` and ``handle_request``
hand it over, and the core calls back through the hooks below.

There are five classes in an inheritance diagram, four of which represent
synchronous servers of four types, as in the stdlib:

        +------------+
        | BaseServer |
        +------------+
              |
              v
        +-----------+        +------------------+
        | TCPServer |------->| UnixStreamServer |
        +-----------+        +------------------+
              |
              v
        +-----------+        +--------------------+
        | UDPServer |------->| UnixDatagramServer |
        +-----------+        +--------------------+

The ForkingMixIn and ThreadingMixIn classes (``mixins.py``) and
fastserver's ThreadPoolMixIn (``pool.py``) and PreforkMixIn
(``workers/``) make them asynchronous.
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from collections.abc import Callable
from time import monotonic as time
from typing import TYPE_CHECKING, Any, ClassVar

from . import _engine, _quiet, _settings, inherit, tls
from ._contract import Overload, default_hook
from ._sockets import is_ip_family, set_tcp_nodelay
from .mixins import ThreadingMixIn

if hasattr(os, "fork"):
    from .mixins import ForkingMixIn

if TYPE_CHECKING:
    import socketserver
    import ssl
    from socket import socket as SocketType

    from typing_extensions import Self, Unpack

    from ._settings import Settings
    from ._typing import Address, InetAddress, RequestType, RetAddress, UnixAddress


if TYPE_CHECKING:
    # fastserver's servers are drop-in replacements for the stdlib's: to the
    # type checker, subtypes of them, so that the stdlib's request handlers
    # (http.server's, xmlrpc.server's) and code written for socketserver's
    # types accept them.  At run time they derive from object, as the
    # stdlib's do.
    _StdlibBaseServer = socketserver.BaseServer
else:
    _StdlibBaseServer = object


# The hook chain: who calls whom, as in the stdlib, and where fastserver's
# core takes over.  serve_forever() hands the loop to the core
# (_engine.serve_forever); the core waits on the listener and a wake-up fd
# and, for each request that is ready, runs the chain below.  A step marked
# [core] is done by the core itself, in C, only while the method is the
# default marked here with @default_hook (the fast-path rule: _plan.py
# decides once per loop; ARCHITECTURE.md).  Override it, on the class or
# on the instance, and the core calls your method instead, with the
# stdlib's arguments, in the stdlib's order.
#
#   serve_forever(poll_interval)                       [core: the loop]
#     service_actions()            after each request and each idle wake-up
#     _handle_request_noblock()    [core] unless overridden
#       get_request()              [core: accept(2)/recvmmsg(2)] TCPServer's,
#                                  UDPServer's; wraps TLS when ssl_context
#       (max_connections reached, overload "refuse": handle_overload())
#       verify_request(request, client_address)              [core: True]
#       process_request(request, client_address)   [core] BaseServer's;
#                                  the mix-ins hand off to a thread, a
#                                  pool worker, a child or a worker process
#         finish_request(request, client_address)  [core] unless TLS
#           (TLS: the handshake; on failure handle_tls_error(), no handler)
#           RequestHandlerClass(request, client_address, self)
#             setup(); handle(); finish()          (handlers.py)
#         shutdown_request(request)                [core] TCPServer's, UDPServer's
#           close_request(request)
#       handle_error(request, client_address)  on an Exception, then
#                                              shutdown_request(request)
#   handle_request()               one request, honouring self.timeout;
#     handle_timeout()             when none came in time
#   shutdown(timeout=None)         wakes the loop at once; with a timeout,
#     drain(timeout)               waits for the open connections, then cuts
#   server_close()


class BaseServer(_StdlibBaseServer):
    """Base class for server classes (the stdlib's ``BaseServer``).

    Methods for the caller:

    - __init__(server_address, RequestHandlerClass)
    - serve_forever(poll_interval=0.5)
    - shutdown()
    - handle_request()  # if you do not use serve_forever()
    - fileno() -> int   # for selector

    Methods that may be overridden:

    - server_bind()
    - server_activate()
    - get_request() -> request, client_address
    - handle_timeout()
    - verify_request(request, client_address)
    - server_close()
    - process_request(request, client_address)
    - shutdown_request(request)
    - close_request(request)
    - service_actions()
    - handle_error()
    """

    timeout: float | None = None

    # fastserver: the settings this class defines (see _settings.py): each
    # may be set on a subclass, on the instance, or passed to the
    # constructor as a keyword argument, and is checked when the class is
    # defined and when the server is constructed.
    _fastserver_settings: ClassVar[tuple[str, ...]] = ("overload", "ssl_handshake_timeout")

    # fastserver.tls: the bound, in seconds, on the TLS handshake that
    # finish_request() completes before the handler (None: the socket's own
    # timeout).  See TCPServer.ssl_context.
    ssl_handshake_timeout: float | None = 10.0

    server_address: Address
    RequestHandlerClass: Callable[[Any, RetAddress, Self], socketserver.BaseRequestHandler]

    if TYPE_CHECKING:
        # Not defined here (as in the stdlib), but every concrete server
        # has them, and the loop uses them.
        socket: SocketType

        def fileno(self) -> int: ...
        def get_request(self) -> tuple[Any, Any]: ...

        # The stdlib's private names, as they are spelled from outside the
        # class (see __init__): mypy does not mangle names.
        _BaseServer__shutdown_request: bool
        _BaseServer__is_shut_down: threading.Event

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """fastserver: a bad setting on the class fails where the class is
        defined, not at its first request."""
        super().__init_subclass__(**kwargs)
        _settings.check_class(cls)

    def __init__(
        self,
        server_address: Address,
        RequestHandlerClass: Callable[[Any, RetAddress, Self], socketserver.BaseRequestHandler],
        **settings: Unpack[Settings],
    ) -> None:
        """Constructor.  May be extended, do not override.

        fastserver: ``settings`` are the server's settings by name (the
        class attributes, such as ``overload``); they become instance
        attributes.  TypeError for a name that is not a setting of the class.
        """
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        # The stdlib's private names, mangled the same way, because code in
        # the wild sets ``server._BaseServer__shutdown_request = True`` to
        # stop serve_forever() from inside a handler.
        self.__is_shut_down = threading.Event()
        self.__shutdown_request = False
        # fastserver: before the subclass's steps (TCPServer's server_bind()
        # reads settings), and checked once the constructor's steps are done:
        # here for a server of its own, after binding for a TCPServer.
        _settings.apply_keywords(self, settings)
        #: fastserver: how many requests ended in each expected way that
        #: handle_error() logs in one line (see _quiet.py), in this process.
        self.quiet_errors: dict[str, int] = _quiet.new_counts()
        if not isinstance(self, TCPServer):
            _settings.check_instance(self)

    def server_activate(self) -> None:
        """Called by constructor to activate the server.  May be overridden."""
        pass

    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        """Handle one request at a time until shutdown.

        Polls for shutdown every poll_interval seconds (it is also woken at
        once by shutdown()).  Calls service_actions() at least every
        poll_interval seconds.
        """
        self.__is_shut_down.clear()
        try:
            _engine.serve_forever(self, poll_interval)
        finally:
            self.__shutdown_request = False
            self.__is_shut_down.set()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stops the serve_forever loop.

        Blocks until the loop has finished.  This must be called while
        serve_forever() is running in another thread, or it will deadlock.
        Unlike the stdlib, the loop is woken at once instead of noticing
        at its next poll_interval.

        fastserver: with a ``timeout`` (seconds), a graceful drain: the loop
        stops accepting at once, connections in flight get until the
        deadline to finish, and the ones still open then are cut (see
        drain()).  Nothing is cut before the deadline.
        """
        self.__shutdown_request = True
        _engine.wake(self)
        if timeout is None:
            self.__is_shut_down.wait()
            return
        deadline = time() + timeout
        if not self.__is_shut_down.wait(timeout):
            # The loop is still inside a request (a synchronous server):
            # cut it, so its handler sees EOF, and let the loop end.
            _engine.connections_of(self).cut()
            self.__is_shut_down.wait()
        self.drain(max(0.0, deadline - time()))

    def drain(self, timeout: float | None) -> int:
        """fastserver: wait up to ``timeout`` seconds for the stream
        connections in flight (accepted, not yet closed by close_request())
        to finish, then shut down both directions of those still open, so
        their handlers see EOF or an error and end.  Returns the number of
        connections cut (0: everything finished in time).

        Call it once the loop has stopped (shutdown(timeout=...) does).
        Datagram requests have no connection to wait for; server_close()
        still joins their threads.
        """
        connections = _engine.connections_of(self)
        if connections.wait_until_empty(timeout):
            return 0
        return connections.cut()

    @default_hook()
    def service_actions(self) -> None:
        """Called by the serve_forever() loop.

        May be overridden by a subclass / Mixin to implement any code that
        needs to be run during the loop.
        """
        pass

    def handle_request(self) -> None:
        """Handle one request, possibly blocking.

        Respects self.timeout.
        """
        # Support people who used socket.settimeout() to escape
        # handle_request before self.timeout was available.
        timeout = self.socket.gettimeout()
        if timeout is None:
            timeout = self.timeout
        elif self.timeout is not None:
            timeout = min(timeout, self.timeout)
        if timeout is not None:
            deadline = time() + timeout
        fd = self.fileno()
        wait_readable = _engine.core.wait_readable
        while True:
            if wait_readable(fd, timeout):
                return self._handle_request_noblock()
            elif timeout is not None:
                timeout = deadline - time()
                if timeout < 0:
                    return self.handle_timeout()

    @default_hook()
    def _handle_request_noblock(self) -> None:
        """Handle one request, without blocking.

        I assume that selector.select() has returned that the socket is
        readable before this function was called, so there should be no risk
        of blocking in get_request().
        """
        _engine.core.handle_request_noblock(self)

    def handle_timeout(self) -> None:
        """Called if no new request arrives within self.timeout.

        Overridden by ForkingMixIn.
        """
        pass

    @default_hook()
    def verify_request(self, request: RequestType, client_address: RetAddress) -> bool:
        """Verify the request.  May be overridden.

        Return True if we should proceed with this request.
        """
        return True

    @default_hook()
    def process_request(self, request: RequestType, client_address: RetAddress) -> None:
        """Call finish_request.

        Overridden by ForkingMixIn and ThreadingMixIn.
        """
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self) -> None:
        """Called to clean-up the server.

        May be overridden.
        """
        _engine.close(self)

    @default_hook()
    def finish_request(self: Self, request: RequestType, client_address: RetAddress) -> None:
        """Finish one request by instantiating RequestHandlerClass."""
        # fastserver: a TLS connection completes its handshake here, where
        # the request is served (its thread, worker or child), not in the
        # loop (fastserver/tls.py says why).  On failure the handler never
        # runs; the caller's shutdown_request() closes the connection.
        if type(request) is not socket.socket:
            failure = tls.complete_handshake(request, self.ssl_handshake_timeout)
            if failure is not None:
                if TYPE_CHECKING:  # only a TLS connection has a handshake to fail
                    assert isinstance(request, socket.socket)
                self.handle_tls_error(request, client_address, failure)
                return
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: RequestType) -> None:
        """Called to shutdown and close an individual request."""
        self.close_request(request)

    def close_request(self, request: RequestType) -> None:
        """Called to clean up an individual request."""
        pass

    # fastserver: what serve_forever() does when a capacity limit is
    # reached (TCPServer.max_connections; ThreadPoolMixIn's queue):
    # "wait" -- stop accepting until there is room (new connections wait in
    # the kernel's backlog); "refuse" -- accept and hand the request to
    # handle_overload() instead of verify_request().
    overload: Overload = "wait"

    def handle_overload(self, request: RequestType, client_address: RetAddress) -> None:
        """fastserver: called instead of the request chain when a limit is
        reached and ``overload == "refuse"``.  May be overridden (to send a
        "busy" reply first, say).  The default closes the connection (or
        drops the datagram) through shutdown_request()."""
        self.shutdown_request(request)

    def handle_tls_error(
        self, request: SocketType, client_address: RetAddress, exc: OSError
    ) -> None:
        """fastserver: a TLS handshake failed or timed out (``exc``).  May be
        overridden.

        The connection is closed afterwards and the handler never runs.  The
        default logs one warning line (no traceback) to ``fastserver.tls``.
        """
        tls.log_tls_error(client_address, exc)

    def handle_error(self, request: RequestType, client_address: RetAddress) -> None:
        """Handle an error gracefully.  May be overridden.

        The default is to print a traceback and continue.

        fastserver: except for the expected ways a connection ends early,
        each logged in one line on the ``fastserver.requests`` logger and
        counted in ``self.quiet_errors``: a timeout of the server's
        ``idle_timeout`` or the handler's ``timeout`` (WARNING), a line
        longer than the handler's ``max_line_length`` (WARNING), a client
        that resets or closes the connection mid-request (INFO).
        """
        if _quiet.report(self, request, client_address, sys.exc_info()[1]):
            return
        print("-" * 40, file=sys.stderr)
        print(
            "Exception occurred during processing of request from",
            client_address,
            file=sys.stderr,
        )
        import traceback

        traceback.print_exc()
        print("-" * 40, file=sys.stderr)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *args: object) -> None:
        self.server_close()


class TCPServer(BaseServer):
    """Base class for various socket-based server classes.

    Defaults to synchronous IP stream (i.e., TCP).
    """

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = 5
    allow_reuse_address = False
    allow_reuse_port = False
    # fastserver: accepted TCP connections get TCP_NODELAY, as in asyncio,
    # uvloop and Go.  Without it a handler's small writes wait for the
    # client's delayed ACK (Nagle): ~40 ms per keep-alive HTTP response.
    # Set to False for the stdlib's behaviour.  Read when a loop starts.
    tcp_nodelay = True
    # fastserver: the most connections open at once (accepted and not yet
    # closed by close_request()), or None for no limit.  Beyond it,
    # ``overload`` says whether new connections wait in the backlog or are
    # refused through handle_overload().  Read when a loop starts.
    max_connections: int | None = None
    # fastserver: seconds a connection may stay silent: set as each
    # accepted socket's timeout, so a recv() or send() that makes no
    # progress for that long raises TimeoutError in the handler (and the
    # slow client's thread is freed).  A handler's own ``timeout``
    # (StreamRequestHandler.timeout) overrides it.  None: no timeout.
    idle_timeout: float | None = None
    # fastserver.tls: an ssl.SSLContext (server side) to serve every
    # connection over TLS; see BaseServer.ssl_handshake_timeout and
    # handle_tls_error().  Read when a loop starts.
    ssl_context: ssl.SSLContext | None = None

    _fastserver_settings: ClassVar[tuple[str, ...]] = (
        "tcp_nodelay", "max_connections", "idle_timeout", "ssl_context")

    # fastserver: a server on a socket bound elsewhere (a supervisor,
    # systemd socket activation; see fastserver/inherit.py).
    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        RequestHandlerClass: Callable[[Any, RetAddress, Self], socketserver.BaseRequestHandler],
        *args: Any,
        **kwargs: Any,
    ) -> Self:
        """A server of this class that serves on ``sock``, a socket bound
        elsewhere.

        ``sock`` may be listening already (its backlog is kept) or only bound
        (it is made to listen, for a stream server).  The server owns it from
        then on: ``server_close()`` closes it.

        The server is built as the stdlib's constructor builds it, with
        ``bind_and_activate=False`` and any further arguments passed on, so
        subclasses with the stdlib's constructor signature (HTTPServer,
        SimpleXMLRPCServer...) work; then its ``server_bind()`` and
        ``server_activate()`` run, so a subclass's additions to them (such as
        HTTPServer's ``server_name``) happen as usual, while TCPServer's own
        steps leave the adopted socket's binding and backlog alone.

        Raises ValueError, leaving ``sock`` untouched, when it is closed, not
        bound, or not of the class's type (SOCK_STREAM or SOCK_DGRAM) and
        family (an IP server takes IPv4 or IPv6: the server takes the
        socket's family).
        """
        inherit.check_adoptable(sock, cls.socket_type, cls.address_family, cls.__name__)
        # A subclass's constructor takes the stdlib's arguments, maybe more.
        make_server: Callable[..., Self] = cls
        server = make_server(
            sock.getsockname(), RequestHandlerClass, *args, bind_and_activate=False, **kwargs
        )
        fresh_socket, server.socket = server.socket, sock
        fresh_socket.close()
        server.address_family = sock.family
        server._fastserver_adopted_socket = sock
        # Like every socket a server makes itself (PEP 446): not passed on to
        # programs the server runs.
        sock.set_inheritable(False)
        try:
            server.server_bind()
            server.server_activate()
        except BaseException:
            server.server_close()  # as the stdlib's constructor does on failure
            raise
        return server

    @classmethod
    def from_fd(
        cls,
        fd: int,
        RequestHandlerClass: Callable[[Any, RetAddress, Self], socketserver.BaseRequestHandler],
        *args: Any,
        **kwargs: Any,
    ) -> Self:
        """:meth:`from_socket` on the socket whose file descriptor is ``fd``;
        the server owns the fd from then on.  When the fd is not suitable
        the error is raised and the fd stays open, the caller's."""
        sock = socket.socket(fileno=fd)
        try:
            inherit.check_adoptable(sock, cls.socket_type, cls.address_family, cls.__name__)
            return cls.from_socket(sock, RequestHandlerClass, *args, **kwargs)
        except BaseException:
            # Give the fd back instead of closing it, unless the server had
            # adopted it already (its server_close() then closed it): the
            # constructor refuses bad arguments or settings before that.
            if sock.fileno() != -1:
                sock.detach()
            raise

    # The socket from_socket()/from_fd() gave the server: its server_bind()
    # must not bind it again, nor its server_activate() shrink the backlog
    # of a socket that listens already.
    _fastserver_adopted_socket: socket.socket | None = None

    def _socket_is_adopted(self) -> bool:
        """True while ``self.socket`` is the socket from_socket() gave (a
        socket swapped in later is bound and activated as usual)."""
        adopted = self._fastserver_adopted_socket
        return adopted is not None and adopted is self.socket

    server_address: InetAddress

    def __init__(
        self,
        server_address: InetAddress,
        RequestHandlerClass: Callable[[Any, RetAddress, Self], socketserver.BaseRequestHandler],
        bind_and_activate: bool = True,
        **settings: Unpack[Settings],
    ) -> None:
        """Constructor.  May be extended, do not override.

        fastserver: ``settings`` by name, as for BaseServer; keyword-only,
        so the stdlib's positional ``bind_and_activate`` keeps its place.
        """
        BaseServer.__init__(self, server_address, RequestHandlerClass, **settings)
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except:  # as the stdlib: close on anything, then re-raise
                self.server_close()
                raise
        # fastserver: the settings, once the stdlib's steps are done (a
        # subclass's server_bind() or server_activate() may set some).
        try:
            _settings.check_instance(self)
        except BaseException:
            self.server_close()  # as above: no socket left behind
            raise

    def server_bind(self) -> None:
        """Called by constructor to bind the socket.

        May be overridden.
        """
        if self._socket_is_adopted():  # fastserver: from_socket(), bound already
            self.server_address = self.socket.getsockname()
            return
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Called by constructor to activate the server.

        May be overridden.
        """
        # fastserver: a socket from from_socket() that listens keeps its backlog.
        if self._socket_is_adopted() and inherit.is_listening(self.socket):
            return
        self.socket.listen(self.request_queue_size)

    def server_close(self) -> None:
        """Called to clean-up the server.

        May be overridden.
        """
        self.socket.close()
        _engine.close(self)

    @default_hook()
    def fileno(self) -> int:
        """Return socket file number.

        Interface required by selector.
        """
        return self.socket.fileno()

    @default_hook("stream")
    def get_request(self) -> tuple[RequestType, RetAddress]:
        """Get the request and client address from the socket.

        May be overridden.
        """
        request, client_address = self.socket.accept()
        if self.tcp_nodelay and is_ip_family(self.address_family):
            set_tcp_nodelay(request)
        if self.idle_timeout is not None:
            request.settimeout(self.idle_timeout)
        if self.ssl_context is not None:
            # fastserver: wrapped now, handshake later in finish_request().
            try:
                request = tls.wrap_accepted(self.ssl_context, request)
            except OSError as exc:
                self.handle_tls_error(request, client_address, exc)
                # What a failed accept() raises: the loop ignores it, as
                # the stdlib's does.
                raise ConnectionAbortedError(
                    errno.ECONNABORTED, f"TLS wrapping failed: {exc}"
                ) from exc
        _engine.connections_of(self).add(request)
        return request, client_address

    @default_hook("stream")
    def shutdown_request(self, request: RequestType) -> None:
        """Called to shutdown and close an individual request."""
        if TYPE_CHECKING:  # a stream server's requests are its connections
            assert isinstance(request, socket.socket)
        try:
            # explicitly shutdown.  socket.close() merely releases
            # the socket and waits for GC to perform the actual close.
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # some platforms may raise ENOTCONN here
        self.close_request(request)

    @default_hook("stream")
    def close_request(self, request: RequestType) -> None:
        """Called to clean up an individual request."""
        if TYPE_CHECKING:  # a stream server's requests are its connections
            assert isinstance(request, socket.socket)
        request.close()
        _engine.connection_closed(self, request)


class UDPServer(TCPServer):
    """UDP server class."""

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 8192

    @default_hook("datagram")
    def get_request(self) -> tuple[RequestType, RetAddress]:
        data, client_addr = self.socket.recvfrom(self.max_packet_size)
        return (data, self.socket), client_addr

    def server_activate(self) -> None:
        # No need to call listen() for UDP.
        pass

    @default_hook("datagram")
    def shutdown_request(self, request: RequestType) -> None:
        # No need to shutdown anything.
        self.close_request(request)

    @default_hook("datagram")
    def close_request(self, request: RequestType) -> None:
        # No need to close anything.
        pass


if hasattr(os, "fork"):

    class ForkingUDPServer(ForkingMixIn, UDPServer):
        pass

    class ForkingTCPServer(ForkingMixIn, TCPServer):
        pass


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    pass


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    pass


if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        address_family = socket.AF_UNIX

        if TYPE_CHECKING:
            # A path, not TCPServer's (host, port): typeshed makes the
            # same exception to the class hierarchy the stdlib has.
            server_address: UnixAddress  # type: ignore[assignment]

            def __init__(
                self,
                server_address: UnixAddress,
                RequestHandlerClass: Callable[
                    [Any, RetAddress, Self], socketserver.BaseRequestHandler
                ],
                bind_and_activate: bool = True,
                **settings: Unpack[Settings],
            ) -> None: ...

    class UnixDatagramServer(UDPServer):
        address_family = socket.AF_UNIX

        if TYPE_CHECKING:
            # A path, not UDPServer's (host, port), as for UnixStreamServer.
            server_address: UnixAddress  # type: ignore[assignment]

            def __init__(
                self,
                server_address: UnixAddress,
                RequestHandlerClass: Callable[
                    [Any, RetAddress, Self], socketserver.BaseRequestHandler
                ],
                bind_and_activate: bool = True,
                **settings: Unpack[Settings],
            ) -> None: ...

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        pass

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        pass

    if hasattr(os, "fork"):

        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
            pass

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
            pass
