"""Serve on a socket made elsewhere: inherited fds and systemd socket
activation.

A supervisor (systemd, a shell script, a parent process) binds the port and
hands the socket to the server process.  The port then outlives any one
server process: while a server restarts, new connections wait in the
listening socket's backlog instead of being refused.

- :func:`listen_fds` / :func:`listen_fds_with_names` take the sockets
  systemd passed (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``; fds
  from 3 on), as ``sd_listen_fds(3)`` does.
- :func:`check_adoptable`, :func:`is_bound` and :func:`is_listening` are
  the checks ``Server.from_socket(sock, RequestHandlerClass, ...)`` and
  ``Server.from_fd(fd, RequestHandlerClass, ...)`` (classmethods of
  TCPServer and every class derived from it, in ``servers.py``) make
  before they build a server around such a socket.
"""
from __future__ import annotations

import os
import socket

from ._sockets import is_ip_family

#: The first fd systemd passes (SD_LISTEN_FDS_START).
SD_LISTEN_FDS_START = 3

_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


# ---------------------------------------------------------------------------
# systemd socket activation
# ---------------------------------------------------------------------------


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The sockets systemd passed to this process, in order (fd 3, 4, ...).

    Like ``sd_listen_fds(3)``: an empty list when ``LISTEN_PID`` or
    ``LISTEN_FDS`` is missing, or when ``LISTEN_PID`` is another process's
    (the variables leaked from a parent); each fd is marked close-on-exec;
    with ``unset_environment`` (the default) the three variables are removed
    from ``os.environ`` whatever the outcome, so children do not take the
    sockets for theirs.  Raises ValueError when the variables are malformed
    or a passed fd is not a socket.
    """
    return [sock for _, sock in listen_fds_with_names(unset_environment)]


def listen_fds_with_names(
    unset_environment: bool = True,
) -> list[tuple[str, socket.socket]]:
    """``(name, socket)`` pairs of the sockets systemd passed, in order.

    Names come from ``LISTEN_FDNAMES`` (a unit's ``FileDescriptorName=``,
    colon-separated); systemd's default, ``"unknown"``, stands for each one
    it does not give.  Otherwise as :func:`listen_fds`.
    """
    try:
        count = _passed_fd_count()
        names_text = os.environ.get("LISTEN_FDNAMES", "")
        names = names_text.split(":") if names_text else []
        if names and len(names) != count:
            raise ValueError(
                f"LISTEN_FDNAMES names {len(names)} fds but LISTEN_FDS says {count}"
            )
        names += ["unknown"] * (count - len(names))
        fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
        for fd in fds:  # first, so no fd leaks into a child if one is bad
            os.set_inheritable(fd, False)
        return [(name, _socket_of_passed_fd(fd)) for name, fd in zip(names, fds)]
    finally:
        if unset_environment:
            for name in _SYSTEMD_VARIABLES:
                os.environ.pop(name, None)


def _passed_fd_count() -> int:
    """How many fds systemd passed to this very process (0 if none)."""
    pid_text, count_text = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    if not pid_text or not count_text:
        return 0
    pid, count = _parse_int("LISTEN_PID", pid_text), _parse_int("LISTEN_FDS", count_text)
    if pid != os.getpid():
        return 0
    if count <= 0:
        raise ValueError(f"LISTEN_FDS={count_text!r}: expected a positive count")
    return count


def _parse_int(variable: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a number") from None


def _socket_of_passed_fd(fd: int) -> socket.socket:
    try:
        return socket.socket(fileno=fd)  # family, type and protocol from the fd
    except OSError as exc:
        raise ValueError(
            f"fd {fd} passed by the service manager is not a socket: {exc}"
        ) from None


# ---------------------------------------------------------------------------
# Checks for a socket a server is to adopt (TCPServer.from_socket)
# ---------------------------------------------------------------------------


def check_adoptable(
    sock: socket.socket, socket_type: int, address_family: int, server_name: str
) -> None:
    """Raise ValueError unless a server of ``socket_type`` and
    ``address_family`` (the class ``server_name``) can serve on ``sock``:
    open, bound, of that type, and of that family (an IP server takes IPv4
    or IPv6)."""
    if sock.fileno() < 0:
        raise ValueError("the socket is closed")
    if sock.type != socket_type:
        raise ValueError(
            f"{server_name} serves {_name_of(socket_type)} sockets, "
            f"not {_name_of(sock.type)}"
        )
    if not _same_family(sock.family, address_family):
        raise ValueError(
            f"{server_name} serves {_name_of(address_family)} sockets, "
            f"not {_name_of(sock.family)}"
        )
    if not is_bound(sock):
        raise ValueError("the socket is not bound to an address: bind() it first")


def _same_family(given: int, expected: int) -> bool:
    return given == expected or (is_ip_family(given) and is_ip_family(expected))


def _name_of(constant: int) -> str:
    name: str = getattr(constant, "name", str(constant))  # an IntEnum's name
    return name


def is_bound(sock: socket.socket) -> bool:
    """True when ``sock`` has a local address (an IP port, a Unix path or
    abstract name)."""
    address = sock.getsockname()
    if is_ip_family(sock.family):
        port: int = address[1]
        return port != 0
    return bool(address)


def is_listening(sock: socket.socket) -> bool:
    """True when ``sock`` listens already (SO_ACCEPTCONN).  Where the system
    cannot tell, False: listen() again is harmless but for the backlog."""
    option = getattr(socket, "SO_ACCEPTCONN", None)
    if option is None:
        return False
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:
        return False
