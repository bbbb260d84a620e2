"""Serve on a socket made elsewhere: inherited fds and systemd socket
activation (issue 4, item 6).

A supervisor (systemd, a shell script, a parent process) binds the port and
hands the socket to the server process.  The port then outlives any one
server process: while a server restarts, new connections wait in the
listening socket's backlog instead of being refused.

- :func:`listen_fds` / :func:`listen_fds_with_names` take the sockets
  systemd passed (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``; fds
  from 3 on), as ``sd_listen_fds(3)`` does.
- ``Server.from_socket(sock, RequestHandlerClass, ...)`` and
  ``Server.from_fd(fd, RequestHandlerClass, ...)`` (classmethods of
  TCPServer and every class derived from it; implemented here) build a
  server around such a socket.
"""
from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import socketserver
    from collections.abc import Callable

    from ._typing import RetAddress
    from .servers import TCPServer

    _Server = TypeVar("_Server", bound=TCPServer)
    # A RequestHandlerClass for servers of type _Server (fastserver's
    # handlers or the stdlib's: see servers.py).
    _HandlerClass = Callable[[Any, RetAddress, _Server], socketserver.BaseRequestHandler]

#: The first fd systemd passes (SD_LISTEN_FDS_START).
SD_LISTEN_FDS_START = 3

_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_IP_FAMILIES = frozenset(
    family for family in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if family is not None
)
# The instance attribute that marks a server's socket as adopted: its
# server_bind() must not bind it again, nor its server_activate() shrink the
# backlog of a socket that listens already.
_ADOPTED = "_fastserver_adopted_socket"


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
# Servers around a given socket
# ---------------------------------------------------------------------------


def server_from_socket(
    cls: type[_Server],
    sock: socket.socket,
    RequestHandlerClass: _HandlerClass[_Server],
    *args: Any,
    **kwargs: Any,
) -> _Server:
    """A ``cls`` server that serves on ``sock``, a socket bound elsewhere.

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
    bound, or not of the class's type (SOCK_STREAM or SOCK_DGRAM) and family
    (an IP server takes IPv4 or IPv6: the server takes the socket's family).
    """
    check_adoptable(cls, sock)
    # A subclass's constructor takes the stdlib's arguments, maybe more.
    make_server: Callable[..., _Server] = cls
    server = make_server(
        sock.getsockname(), RequestHandlerClass, *args, bind_and_activate=False, **kwargs
    )
    fresh_socket, server.socket = server.socket, sock
    fresh_socket.close()
    server.address_family = sock.family
    setattr(server, _ADOPTED, sock)
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


def server_from_fd(
    cls: type[_Server],
    fd: int,
    RequestHandlerClass: _HandlerClass[_Server],
    *args: Any,
    **kwargs: Any,
) -> _Server:
    """:func:`server_from_socket` on the socket whose file descriptor is
    ``fd``; the server owns the fd from then on.  When the fd is not
    suitable the error is raised and the fd stays open, the caller's."""
    sock = socket.socket(fileno=fd)
    try:
        check_adoptable(cls, sock)
    except BaseException:
        sock.detach()  # give the fd back instead of closing it
        raise
    return server_from_socket(cls, sock, RequestHandlerClass, *args, **kwargs)


def check_adoptable(cls: type[TCPServer], sock: socket.socket) -> None:
    """Raise ValueError unless ``cls`` can serve on ``sock``."""
    if sock.fileno() < 0:
        raise ValueError("the socket is closed")
    if sock.type != cls.socket_type:
        raise ValueError(
            f"{cls.__name__} serves {_name_of(cls.socket_type)} sockets, "
            f"not {_name_of(sock.type)}"
        )
    if not _same_family(sock.family, cls.address_family):
        raise ValueError(
            f"{cls.__name__} serves {_name_of(cls.address_family)} sockets, "
            f"not {_name_of(sock.family)}"
        )
    if not is_bound(sock):
        raise ValueError("the socket is not bound to an address: bind() it first")


def _same_family(given: int, expected: int) -> bool:
    return given == expected or (given in _IP_FAMILIES and expected in _IP_FAMILIES)


def _name_of(constant: int) -> str:
    name: str = getattr(constant, "name", str(constant))  # an IntEnum's name
    return name


def is_bound(sock: socket.socket) -> bool:
    """True when ``sock`` has a local address (an IP port, a Unix path or
    abstract name)."""
    address = sock.getsockname()
    if sock.family in _IP_FAMILIES:
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


def is_adopted(server: TCPServer) -> bool:
    """True while ``server.socket`` is the socket from_socket()/from_fd()
    gave it (a socket swapped in later is bound and activated as usual)."""
    adopted: socket.socket | None = server.__dict__.get(_ADOPTED)
    return adopted is not None and adopted is server.socket
