"""The contract between the server classes and the two cores, written once.

The server classes (``servers.py``) decide *what* happens, the cores
(``_core`` compiled from ``src/_core.pyx``, and its pure-Python twin
``_core_py``) make the loop happen.  Everything the two sides must agree
on is here, and both cores read it from here at import:

- the ``Plan``: which steps of the request chain a core may do itself for
  one serve_forever() loop, decided once when the loop starts by
  ``_plan.plan_for`` (ARCHITECTURE.md, "The fast-path rule");
- the marks that say which methods are fastserver's own defaults, so the
  planner recognises them without importing the server classes;
- what taking one request tells the loop (``HANDLED``, ``BACK_OFF``,
  ``LISTENER_CLOSED``) and the loop's constants;
- the per-server state a loop works on (``LoopState``) and the interface
  each core offers (``Core``), for the type checker.

This module imports nothing else of fastserver's.
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from ._typing import Datagram
    from .connections import OpenConnections

# ---------------------------------------------------------------------------
# The loop's constants
# ---------------------------------------------------------------------------

#: Requests handled per readiness before the loop waits again.
DRAIN_BATCH = 64

#: errno values of get_request() that mean "out of a resource, not the
#: client's fault": the listener stays readable, so retrying at once would
#: spin.  The loop pauses accepting instead, for BACKOFF_MIN doubling to
#: BACKOFF_MAX seconds, until an accept succeeds.
RESOURCE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
BACKOFF_MIN = 0.005
BACKOFF_MAX = 0.1

#: errno values of get_request() that mean the listening socket itself is
#: gone (closed under the loop): stop accepting, wait for shutdown().
LISTENER_GONE_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))

# What taking one request tells the loop about the listener.
HANDLED = 0  #: a request was taken (or refused): keep draining
BACK_OFF = 1  #: out of fds or memory: pause accepting for a while
LISTENER_CLOSED = 2  #: the listening socket was closed under us: stop accepting


def status_of_errno(code: int | None) -> int:
    """What a get_request() that failed with ``code`` says of the listener.

    The stdlib ignores every OSError there, and so do we, but a loop that
    retried at once after EMFILE would spin.
    """
    if code in RESOURCE_ERRNOS:
        return BACK_OFF
    if code in LISTENER_GONE_ERRNOS:
        return LISTENER_CLOSED
    return HANDLED


# ---------------------------------------------------------------------------
# Settings shared by the server classes and the plan
# ---------------------------------------------------------------------------

Overload = Literal["wait", "refuse"]
#: What serve_forever() does when a capacity limit is reached
#: (TCPServer.max_connections, ThreadPoolMixIn's queue).
OVERLOAD_POLICIES: tuple[Overload, ...] = ("wait", "refuse")


def check_overload(value: object, owner: str = "overload") -> Overload:
    """``value`` if it is an overload policy; else ValueError naming ``owner``."""
    if value == "wait" or value == "refuse":
        return value
    allowed = ", ".join(map(repr, OVERLOAD_POLICIES))
    raise ValueError(f"{owner} must be one of {allowed}, not {value!r}")


#: How a core may take a request: by calling ``server.get_request()``, or
#: itself, as TCPServer.get_request (accept(2)) or UDPServer.get_request
#: (recvfrom(2)) would.
AcceptKind = Literal["call", "stream", "datagram"]
ACCEPT_KINDS: tuple[AcceptKind, ...] = ("call", "stream", "datagram")

#: How a core may end a request: by calling ``server.shutdown_request()``,
#: or itself, as TCPServer's (shutdown(SHUT_WR), close) or UDPServer's
#: (nothing to close) would.
ShutdownKind = Literal["call", "stream", "nothing"]
SHUTDOWN_KINDS: tuple[ShutdownKind, ...] = ("call", "stream", "nothing")


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Which steps of the request chain a core may do itself, for one loop.

    Every field left at its default means "call the server's method", which
    is always correct; the others are promises that the method is
    fastserver's own default, so doing its work in the core cannot be told
    apart.  The plan is a decision, fixed for the loop; what a loop changes
    (the open connections, datagrams left over) is in its ``LoopState``.
    """

    #: The user's own ``_handle_request_noblock``: when set, the loop calls
    #: it for each readiness and nothing else of the chain.
    handle_one: Callable[[], object] | None = None
    accept: AcceptKind = "call"
    #: ``server.socket``, when ``accept`` is not "call": a plain socket the
    #: core may accept or receive on.
    listener: socket.socket | None = None
    verify_default: bool = False  #: verify_request is BaseServer's (always True)
    process_default: bool = False  #: process_request is BaseServer's
    finish_default: bool = False  #: finish_request is BaseServer's, and no TLS
    shutdown: ShutdownKind = "call"
    service_actions_default: bool = False  #: BaseServer's: does nothing
    #: Set TCP_NODELAY on connections the core accepts (TCPServer.get_request would).
    tcp_nodelay: bool = False
    #: settimeout() of connections the core accepts, or None.
    idle_timeout: float | None = None
    #: The most stream connections open at once; 0 for no limit.
    max_connections: int = 0
    #: At ``max_connections``: stop accepting ("wait") or hand each new
    #: connection to handle_overload() ("refuse").
    overload: Overload = "wait"
    #: Green handlers (GreenMixIn): the loop runs a hub, accepts each
    #: connection as a green socket and process_request() hands its chain
    #: to a greenlet of that hub.  Needs accept "stream".
    green: bool = False

    def __post_init__(self) -> None:
        if self.accept not in ACCEPT_KINDS:
            raise ValueError(f"accept must be one of {ACCEPT_KINDS}, not {self.accept!r}")
        if self.shutdown not in SHUTDOWN_KINDS:
            raise ValueError(f"shutdown must be one of {SHUTDOWN_KINDS}, not {self.shutdown!r}")
        if self.accept != "call" and self.listener is None:
            raise ValueError(f"accept={self.accept!r} needs the listening socket")
        check_overload(self.overload)
        if self.green and self.accept != "stream":
            raise ValueError("green needs accept='stream': the loop's own sockets")

    @property
    def refuse_overload(self) -> bool:
        """At the limit, refuse new connections through handle_overload()."""
        return self.max_connections > 0 and self.overload == "refuse"

    @property
    def wait_for_room(self) -> bool:
        """At the limit, stop accepting until a connection closes."""
        return self.max_connections > 0 and self.overload == "wait"


#: The plan of a loop whose every step is a call (handle_request()'s).
CALL_EVERY_HOOK = Plan()


# ---------------------------------------------------------------------------
# The marks of fastserver's own default hooks
# ---------------------------------------------------------------------------

_Method = TypeVar("_Method", bound=Callable[..., Any])

#: Each default hook, by identity, and what it does ("base", "stream",
#: "datagram"): a registry rather than an attribute on the function, since
#: functools.wraps() copies a function's attributes onto a user's wrapper,
#: which must still be called.
_DEFAULT_HOOKS: dict[Callable[..., Any], str] = {}


def default_hook(kind: str = "base") -> Callable[[_Method], _Method]:
    """Mark a method of the server classes as fastserver's own default.

    ``kind`` tells apart defaults that differ by server type: TCPServer's
    get_request is a "stream" default, UDPServer's a "datagram" one.
    """

    def mark(method: _Method) -> _Method:
        _DEFAULT_HOOKS[method] = kind
        return method

    return mark


def default_kind(server: object, name: str) -> str | None:
    """The kind of default ``server.<name>`` is, or None when it is not
    one of fastserver's defaults: overridden on the class, set on the
    instance, or missing."""
    if name in getattr(server, "__dict__", ()):
        return None
    method = getattr(type(server), name, None)
    try:
        return _DEFAULT_HOOKS.get(method)  # type: ignore[arg-type]
    except TypeError:  # an unhashable attribute: not ours
        return None


# ---------------------------------------------------------------------------
# What each core offers (for the type checker; ARCHITECTURE.md in words)
# ---------------------------------------------------------------------------


class Waker(Protocol):
    """A wake-up fd (eventfd or self-pipe) that shutdown() writes to."""

    def fileno(self) -> int: ...
    def wake(self) -> None: ...
    def drain(self) -> None: ...
    def close(self) -> None: ...


class Poller(Protocol):
    """Readiness for reading of a few fds."""

    @property
    def backend(self) -> str: ...
    def register(self, fd: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def wait(self, timeout: float | None) -> list[int]: ...
    def close(self) -> None: ...


class Server(Protocol):
    """What a core calls on a server: the stdlib's hooks (``servers.py``)."""

    #: The stdlib's private flag, read at every turn of the loop: code in the
    #: wild sets it from a handler to stop serve_forever().
    _BaseServer__shutdown_request: bool

    def fileno(self) -> int: ...
    def get_request(self) -> tuple[Any, Any]: ...
    def verify_request(self, request: Any, client_address: Any) -> bool: ...
    def process_request(self, request: Any, client_address: Any) -> None: ...
    def handle_error(self, request: Any, client_address: Any) -> None: ...
    def shutdown_request(self, request: Any) -> None: ...
    def handle_overload(self, request: Any, client_address: Any) -> None: ...
    def service_actions(self) -> None: ...


class LoopState(Protocol):
    """What a loop changes, owned by the server's engine (``_engine``)."""

    waker: Waker
    #: The server's open stream connections (for max_connections and drain).
    connections: OpenConnections
    #: Datagrams a loop received in a batch but did not get to serve (a
    #: handler raised KeyboardInterrupt): the next loop serves them first.
    leftover_datagrams: list[Datagram]


class Core(Protocol):
    """A core: the compiled ``fastserver._core`` or the twin ``_core_py``."""

    def Waker(self) -> Waker: ...
    def Poller(self, backend: str | None = None) -> Poller: ...
    def choose_backend(self, backend: str | None = None) -> str: ...
    def serve_forever(
        self, server: Server, poll_interval: float | None, plan: Plan, state: LoopState
    ) -> None: ...
    def handle_request_noblock(self, server: Server) -> int: ...
    def wait_readable(self, fd: int, timeout: float | None) -> bool: ...
