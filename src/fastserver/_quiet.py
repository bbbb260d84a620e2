"""The expected ways a request ends early, told in one log line each instead
of the default ``handle_error()``'s 15-line traceback.

A connection that hits one of the server's limits, or whose client goes
away, is not a bug in the handler: a traceback per occurrence buries the
errors that are.  The default ``BaseServer.handle_error`` asks
:func:`report` first; the kinds it knows, each counted in the server's
``quiet_errors`` under its key:

``"timeout"``
    A socket's ``TimeoutError`` (``socket.timeout``: "timed out", or ssl's
    "The read operation timed out") on a connection whose timeout is the
    server's ``idle_timeout`` or the handler class's own ``timeout``: a
    WARNING, since a limit acted (an operator tuning limits wants to see
    it).  A TimeoutError of the handler's own making (a future's, a message
    of its own) keeps its traceback; one from another socket the handler
    uses, while its connection has a timeout, cannot be told apart.
``"line_too_long"``
    ``LineTooLong``: the client sent a line longer than the handler's
    ``max_line_length``.  A WARNING, for the same reason.
``"reset"``
    ``ConnectionResetError``, ``BrokenPipeError``, ``ConnectionAbortedError``:
    the client closed or reset the connection mid-request.  INFO: routine on
    any public port (a browser cancelling, a scanner, a client's timeout),
    and nothing the server's operator can act on; with logging left
    unconfigured, Python shows WARNING and above only, so these are silent
    unless asked for, and counted either way.

Anything else keeps the stdlib's traceback.  A user's own ``handle_error``
replaces all of this, as it replaces the stdlib's default.

The lines go to the ``fastserver.requests`` logger (``fastserver.tls`` has
the failed handshakes), with the client as ``tls.describe_client`` writes
it.  ``logging`` is imported at the first such line, not before.  This
module reads a server's attributes and never calls its methods.
"""
from __future__ import annotations

import socket
from typing import Any, NamedTuple

from ._forksafe import ForkSafeLock
from .errors import LineTooLong
from .tls import describe_client

#: The logger of the lines (a child of "fastserver", as "fastserver.tls").
LOGGER = "fastserver.requests"

#: The keys of ``server.quiet_errors``.
KINDS = ("timeout", "line_too_long", "reset")

# logging's levels, without importing logging for them.
_WARNING = 30
_INFO = 20

# socket.timeout is TimeoutError from 3.10 on; before, an OSError of its own.
_TIMEOUTS = (TimeoutError, socket.timeout)
# What a socket's timed-out operation says: the socket module's (and the
# compiled core's readers'), and ssl's.  A TimeoutError with another message
# (or none: concurrent.futures', asyncio's) is not the connection's limit.
_SOCKET_TIMEOUT_MESSAGES = frozenset(
    ("timed out", "The read operation timed out", "The write operation timed out")
)
_CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Quiet(NamedTuple):
    """How to report one expected error: its key in ``quiet_errors``, the
    logging level, and the message as logging's format and arguments."""

    kind: str
    level: int
    message: str
    args: tuple[object, ...]


def _name(obj: object) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _timeout_limit(server: Any, request: object) -> str | None:
    """The setting whose timeout ``request`` (a connection) has: the
    handler class's ``timeout`` (it overrides the server's), the server's
    ``idle_timeout``, or None when neither is in effect on it."""
    if not isinstance(request, socket.socket):
        return None
    in_effect = request.gettimeout()
    if in_effect is None:
        return None
    handler_class = getattr(server, "RequestHandlerClass", None)
    if getattr(handler_class, "timeout", None) == in_effect:
        return f"{_name(handler_class)}.timeout"
    if getattr(server, "idle_timeout", None) == in_effect:
        return f"{type(server).__name__}.idle_timeout"
    return None


def classify(
    server: Any, request: object, client_address: Any, exc: BaseException | None
) -> Quiet | None:
    """How to report ``exc``, raised while ``server`` served ``request``
    from ``client_address``; None for an error that deserves a traceback."""
    if exc is None:
        return None
    who = describe_client(client_address)
    if isinstance(exc, LineTooLong):
        setting = f"{_name(getattr(server, 'RequestHandlerClass', None))}.max_line_length"
        return Quiet("line_too_long", _WARNING,
                     "%s sent a line longer than %d bytes (%s)", (who, exc.limit, setting))
    if isinstance(exc, _TIMEOUTS) and str(exc) in _SOCKET_TIMEOUT_MESSAGES:
        timeout_setting = _timeout_limit(server, request)
        if timeout_setting is None:
            return None  # not the connection's limit: some other wait of the handler's
        seconds = request.gettimeout()  # type: ignore[attr-defined]  # a socket (_timeout_limit)
        return Quiet("timeout", _WARNING,
                     "%s timed out: no progress for %g s (%s)", (who, seconds, timeout_setting))
    if isinstance(exc, _CLIENT_GONE):
        return Quiet("reset", _INFO,
                     "%s went away mid-request: %s: %s", (who, type(exc).__name__, exc))
    return None


# ---------------------------------------------------------------------------
# The counters
# ---------------------------------------------------------------------------

# Guards every server's counters: handle_error() runs on the handlers'
# threads, and ``+= 1`` on a dict item is a read and a write.  One lock for
# all servers: these are rare, and it is held for an addition.
_counts_lock = ForkSafeLock()


def new_counts() -> dict[str, int]:
    """A server's ``quiet_errors``: every kind, at zero."""
    return dict.fromkeys(KINDS, 0)


def report(server: Any, request: object, client_address: Any, exc: BaseException | None) -> bool:
    """Log and count ``exc`` if it is one of the expected kinds; False (and
    nothing done) when it deserves the traceback."""
    quiet = classify(server, request, client_address, exc)
    if quiet is None:
        return False
    with _counts_lock:
        counts = server.__dict__.get("quiet_errors")
        if counts is None:  # a server made without BaseServer.__init__
            counts = server.__dict__["quiet_errors"] = new_counts()
        counts[quiet.kind] = counts.get(quiet.kind, 0) + 1
    import logging

    logging.getLogger(LOGGER).log(quiet.level, quiet.message, *quiet.args)
    return True
