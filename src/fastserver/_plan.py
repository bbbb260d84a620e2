"""Decide, once per loop, which steps of the request chain the core may do
itself (DESIGN.md, "the fast-path rule").

A step may skip its Python method call only when that method is still
fastserver's own default, on the class and on the instance, and the objects
it touches are exactly the types fastserver made: a hook the user overrides
is always called, and a user who swaps ``server.socket`` for, say, an
``ssl.SSLSocket`` gets the Python path.  Doing a default step in the core
cannot be told apart from calling it.
"""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from . import tls

if TYPE_CHECKING:
    from ._engine import Core
    from ._typing import Datagram
    from .connections import OpenConnections
    from .servers import BaseServer, TCPServer


def is_default(server: object, name: str, default: object) -> bool:
    """True when ``server.<name>`` is ``default``, on the class and the instance."""
    if name in getattr(server, "__dict__", ()):
        return False
    return getattr(type(server), name, None) is default


def _plain_listener(server: BaseServer, socket_type: int) -> socket.socket | None:
    """The listening socket when C may use its fd directly: a plain
    ``socket.socket`` of the expected type, with no timeout, and the fd the
    loop polls."""
    from .servers import TCPServer

    listener: socket.socket | None = getattr(server, "socket", None)
    if type(listener) is not socket.socket or not is_default(server, "fileno", TCPServer.fileno):
        return None
    if listener.type != socket_type or listener.fileno() < 0:
        return None
    if listener.family not in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", None)):
        return None
    # Blocking with no timeout, or non-blocking (a listener shared between
    # processes): either way the core's accept(2) takes what is there.
    if listener.gettimeout() not in (None, 0.0) or socket.getdefaulttimeout() is not None:
        return None
    return listener


def _is_stream_server(server: BaseServer, TCPServer: type[TCPServer]) -> bool:
    return (
        isinstance(server, TCPServer)
        and getattr(server, "socket_type", None) == socket.SOCK_STREAM
    )


def plan_for(
    server: BaseServer,
    core: Core,
    connections: OpenConnections | None = None,
    leftover_datagrams: list[Datagram] | None = None,
) -> object:
    """The core's Plan for ``server``'s next serve_forever() loop.

    ``connections`` is the server's OpenConnections registry; stream
    servers use it for max_connections (and the core's own accept and
    close keep it, as TCPServer.get_request and close_request do).
    """
    from .servers import BaseServer, TCPServer, UDPServer

    if not is_default(server, "_handle_request_noblock", BaseServer._handle_request_noblock):
        return core.Plan(handle_one=server._handle_request_noblock)

    accept, listener = "call", None
    if is_default(server, "get_request", TCPServer.get_request):
        listener = _plain_listener(server, socket.SOCK_STREAM)
        accept = "stream" if listener is not None else "call"
    elif is_default(server, "get_request", UDPServer.get_request):
        listener = _plain_listener(server, socket.SOCK_DGRAM)
        accept = "datagram" if listener is not None else "call"
    # fastserver.tls: with ssl_context set, get_request() wraps each
    # connection and finish_request() runs its handshake: both stay calls.
    tls_enabled = tls.enabled(server)
    if tls_enabled:
        accept, listener = "call", None

    shutdown = "call"
    if is_default(server, "shutdown_request", TCPServer.shutdown_request) and is_default(
        server, "close_request", TCPServer.close_request
    ):
        shutdown = "stream"
    elif is_default(server, "shutdown_request", UDPServer.shutdown_request) and is_default(
        server, "close_request", UDPServer.close_request
    ):
        shutdown = "nothing"

    # TCPServer.get_request sets TCP_NODELAY on TCP connections; when the
    # core accepts instead, it does that too.
    tcp_nodelay = (
        accept == "stream"
        and listener is not None  # always, with accept "stream"
        and bool(getattr(server, "tcp_nodelay", False))
        and listener.family in (socket.AF_INET, getattr(socket, "AF_INET6", None))
    )

    limits: dict[str, Any] = {}
    if connections is not None and _is_stream_server(server, TCPServer):
        limits = {
            "connections": connections,
            "max_connections": getattr(server, "max_connections", None),
            "overload": getattr(server, "overload", "wait"),
            "idle_timeout": getattr(server, "idle_timeout", None),
        }

    return core.Plan(
        **limits,
        leftover_datagrams=leftover_datagrams,
        tcp_nodelay=tcp_nodelay,
        accept=accept,
        listener=listener,
        verify_default=is_default(server, "verify_request", BaseServer.verify_request),
        process_default=is_default(server, "process_request", BaseServer.process_request),
        finish_default=not tls_enabled
        and is_default(server, "finish_request", BaseServer.finish_request),
        shutdown=shutdown,
        service_actions_default=is_default(server, "service_actions", BaseServer.service_actions),
    )
