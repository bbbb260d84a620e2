"""Small facts about sockets that several modules need, spelled once."""
from __future__ import annotations

import socket

#: The IP address families this Python has (IPv6 may be compiled out).
IP_FAMILIES = frozenset(
    family for family in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if family is not None
)
#: AF_UNIX, or None where the platform has no Unix sockets.
AF_UNIX: int | None = getattr(socket, "AF_UNIX", None)


def is_ip_family(family: int) -> bool:
    """True for AF_INET and AF_INET6: the families with ports and TCP."""
    return family in IP_FAMILIES


def set_tcp_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on a TCP connection; a socket that is not
    TCP after all (a swapped-in listener) is left as it is."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
