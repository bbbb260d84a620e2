"""Decide, once per loop, which steps of the request chain the core may do
itself (DESIGN.md, "the fast-path rule").

A step may skip its Python method call only when that method is still
fastserver's own default, on the class and on the instance, and the objects
it touches are exactly the types fastserver made: a hook the user overrides
is always called, and a user who swaps ``server.socket`` for, say, an
``ssl.SSLSocket`` gets the Python path.  Doing a default step in the core
cannot be told apart from calling it.
"""
import socket


def is_default(server, name, default):
    """True when ``server.<name>`` is ``default``, on the class and the instance."""
    if name in getattr(server, "__dict__", ()):
        return False
    return getattr(type(server), name, None) is default


def _plain_listener(server, socket_type):
    """The listening socket when C may use its fd directly: a plain
    ``socket.socket`` of the expected type, blocking with no timeout (as the
    stdlib's accept()/recvfrom() see it), and the fd the loop polls."""
    from .servers import TCPServer

    listener = getattr(server, "socket", None)
    if type(listener) is not socket.socket or not is_default(server, "fileno", TCPServer.fileno):
        return None
    if listener.type != socket_type or listener.fileno() < 0:
        return None
    if listener.family not in (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", None)):
        return None
    if listener.gettimeout() is not None or socket.getdefaulttimeout() is not None:
        return None
    return listener


def plan_for(server, core):
    """The core's Plan for ``server``'s next serve_forever() loop."""
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

    shutdown = "call"
    if is_default(server, "shutdown_request", TCPServer.shutdown_request) and is_default(
        server, "close_request", TCPServer.close_request
    ):
        shutdown = "stream"
    elif is_default(server, "shutdown_request", UDPServer.shutdown_request) and is_default(
        server, "close_request", UDPServer.close_request
    ):
        shutdown = "nothing"

    return core.Plan(
        accept=accept,
        listener=listener,
        verify_default=is_default(server, "verify_request", BaseServer.verify_request),
        process_default=is_default(server, "process_request", BaseServer.process_request),
        finish_default=is_default(server, "finish_request", BaseServer.finish_request),
        shutdown=shutdown,
        service_actions_default=is_default(server, "service_actions", BaseServer.service_actions),
    )
