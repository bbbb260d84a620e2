"""Decide, once per loop, which steps of the request chain the core may do
itself: the fast-path rule (ARCHITECTURE.md).

A step may skip its Python method call only when that method is still
fastserver's own default, on the class and on the instance, and the objects
it touches are exactly the types fastserver made: a hook the user overrides
is always called, and a user who swaps ``server.socket`` for, say, an
``ssl.SSLSocket`` gets the Python path.  Doing a default step in the core
cannot be told apart from calling it.

The defaults are recognised by the marks ``servers.py`` puts on them
(``_contract.default_hook``), so this module never imports the servers.
"""
from __future__ import annotations

import socket
from typing import Any

from . import _settings, _sockets
from ._contract import AcceptKind, Plan, ShutdownKind, default_kind


def _plain_listener(server: Any, socket_type: int) -> socket.socket | None:
    """The listening socket when C may use its fd directly: a plain
    ``socket.socket`` of the expected type, with no timeout, and the fd the
    loop polls."""
    listener: socket.socket | None = getattr(server, "socket", None)
    if type(listener) is not socket.socket or default_kind(server, "fileno") != "base":
        return None
    if listener.type != socket_type or listener.fileno() < 0:
        return None
    if not _sockets.is_ip_family(listener.family) and listener.family != _sockets.AF_UNIX:
        return None
    # Blocking with no timeout, or non-blocking (a listener shared between
    # processes): either way the core's accept(2) takes what is there.
    if listener.gettimeout() not in (None, 0.0) or socket.getdefaulttimeout() is not None:
        return None
    return listener


def _is_stream_server(server: Any) -> bool:
    """A stream server of fastserver's (TCPServer and its subclasses, which
    define ``max_connections``): the kind whose connections the registry
    counts, since TCPServer.get_request adds them."""
    return (
        getattr(server, "socket_type", None) == socket.SOCK_STREAM
        and hasattr(server, "max_connections")
    )


def plan_for(server: Any) -> Plan:
    """The Plan for ``server``'s next serve_forever() loop.

    The settings are checked first (_settings.py): one assigned since the
    constructor checked them fails here, once, and not at every request.
    """
    _settings.check_instance(server)
    if default_kind(server, "_handle_request_noblock") is None:
        return Plan(handle_one=server._handle_request_noblock)

    accept: AcceptKind = "call"
    listener = None
    get_request = default_kind(server, "get_request")
    if get_request == "stream":
        listener = _plain_listener(server, socket.SOCK_STREAM)
    elif get_request == "datagram":
        listener = _plain_listener(server, socket.SOCK_DGRAM)
    if listener is not None:
        accept = "stream" if get_request == "stream" else "datagram"
    # With ssl_context set, get_request() wraps each connection and
    # finish_request() runs its handshake: both stay calls.
    tls_enabled = getattr(server, "ssl_context", None) is not None
    if tls_enabled:
        accept, listener = "call", None

    # Green handlers (green.GreenMixIn) need sockets the loop made: their
    # waits park in its poller.
    green = bool(getattr(server, "_fastserver_green", False))
    if green and accept != "stream":
        raise TypeError(
            f"{type(server).__name__}: green handlers serve the connections the "
            "loop accepts itself, on a plain listening socket with TCPServer's "
            "get_request() and no ssl_context; this server "
            + ("has an ssl_context" if tls_enabled else
               "overrides get_request() or has another kind of listening socket")
        )

    shutdown: ShutdownKind = "call"
    shutdown_request = default_kind(server, "shutdown_request")
    if shutdown_request == default_kind(server, "close_request"):
        if shutdown_request == "stream":
            shutdown = "stream"
        elif shutdown_request == "datagram":
            shutdown = "nothing"

    # TCPServer.get_request sets TCP_NODELAY on TCP connections; when the
    # core accepts instead, it does that too.
    tcp_nodelay = (
        accept == "stream"
        and listener is not None  # always, with accept "stream"
        and bool(getattr(server, "tcp_nodelay", False))
        and _sockets.is_ip_family(listener.family)
    )

    limits: dict[str, Any] = {}
    if _is_stream_server(server):
        # Checked above; the plan says "no limit" with 0 where the setting
        # says None.
        max_connections = getattr(server, "max_connections", None)
        limits = {
            "max_connections": 0 if max_connections is None else max_connections,
            "overload": getattr(server, "overload", "wait"),
            "idle_timeout": getattr(server, "idle_timeout", None),
        }

    return Plan(
        **limits,
        tcp_nodelay=tcp_nodelay,
        accept=accept,
        listener=listener,
        verify_default=default_kind(server, "verify_request") is not None,
        process_default=default_kind(server, "process_request") is not None,
        finish_default=not tls_enabled and default_kind(server, "finish_request") is not None,
        shutdown=shutdown,
        service_actions_default=default_kind(server, "service_actions") is not None,
        green=green,
    )
