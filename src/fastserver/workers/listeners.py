"""The sockets the workers accept on.

On Linux, for TCP and UDP over IPv4 and IPv6, every worker serves its own
SO_REUSEPORT socket bound to the server's address: the kernel spreads
connections over them and wakes only the worker it chose.  The supervisor
keeps them all open, so that connections queued for a worker that crashes
wait in its socket's backlog for its successor instead of being reset.
Elsewhere (Unix sockets, other systems, ``reuse_port = False``) the workers
share ``server.socket``.  Kept apart because this is the part of the
package that depends on how the kernel balances connections, not on
processes.
"""
from __future__ import annotations

import socket
import sys
from typing import Protocol

from .._sockets import is_ip_family

_REUSE_PORT_BALANCES = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class _ListeningServer(Protocol):
    """The settings of the server the listeners are made for (its socket and
    address_family are looked up with getattr: not every server has them)."""

    reuse_port: bool
    allow_reuse_address: bool
    request_queue_size: int


def _wants_reuse_port(server: _ListeningServer) -> bool:
    """Should each worker get its own SO_REUSEPORT socket?  Linux balances
    connections over such sockets; other systems' SO_REUSEPORT does not."""
    return (
        bool(server.reuse_port)
        and _REUSE_PORT_BALANCES
        and is_ip_family(getattr(server, "address_family", -1))
    )


def _sibling_listener(server: _ListeningServer, listener: socket.socket) -> socket.socket:
    """Another socket in ``listener``'s SO_REUSEPORT group: same family,
    type and address, listening with the same backlog."""
    sibling = socket.socket(listener.family, listener.type, listener.proto)
    try:
        if server.allow_reuse_address:
            sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listener.family == getattr(socket, "AF_INET6", None):
            # Dual-stack or not, as server_bind() made the first one.
            v6only = listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            sibling.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sibling.bind(listener.getsockname())
        if listener.type == socket.SOCK_STREAM:
            sibling.listen(server.request_queue_size)
        sibling.settimeout(listener.gettimeout())
    except BaseException:
        sibling.close()
        raise
    return sibling


def _reuse_port_listeners(server: _ListeningServer, count: int) -> list[socket.socket] | None:
    """``server.socket`` and count - 1 siblings, or None when the socket
    cannot have any (it was bound without SO_REUSEPORT, or it is not a plain
    socket: siblings would lack what was done to it, e.g. TLS)."""
    listener: socket.socket | None = getattr(server, "socket", None)
    if (
        listener is None
        or type(listener) is not socket.socket
        or not is_ip_family(listener.family)
    ):
        return None
    try:
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            return None
    except OSError:
        return None
    siblings: list[socket.socket] = []
    try:
        for _ in range(count - 1):
            siblings.append(_sibling_listener(server, listener))
    except OSError:
        for sibling in siblings:
            sibling.close()
        return None  # the workers share server.socket instead
    return [listener] + siblings
