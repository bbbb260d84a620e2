"""The settings of fastserver's servers and handlers, and their rules, each
written once.

A *setting* is an attribute a user sets to change what fastserver does:
``max_workers``, ``idle_timeout``, ``ssl_context``... on a subclass, on an
instance, or (servers) as a keyword argument of the constructor.  Each class
lists the settings it defines in its own ``_fastserver_settings``; a class
has the settings of every class in its MRO (so a mix-in brings its own).

The values are checked here, never per request:

- when a class is defined (``__init_subclass__``): its values, so that a bad
  class attribute fails at import, at the line that defines the class;
- when a server is constructed: what the instance sees, keywords included;
- when a loop or a thread pool starts (``_plan.plan_for``, the pool, the
  supervisor): a value assigned after construction is refused there, once,
  instead of failing every request.

A value that is of the wrong type is a TypeError, one of the right type but
out of range a ValueError; either message names the class and the attribute,
shows the value and says what is allowed.

This module imports nothing of fastserver's but other leaves, and never calls
a server's methods: it reads attributes.
"""
from __future__ import annotations

import numbers
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

from ._contract import Overload, check_overload

if TYPE_CHECKING:
    import ssl


class Settings(TypedDict, total=False):
    """The settings a server's constructor takes as keyword arguments (for
    the type checker: a class takes only those it has, checked at run time)."""

    # BaseServer
    overload: Overload
    ssl_handshake_timeout: float | None
    # TCPServer (stream servers)
    tcp_nodelay: bool
    max_connections: int | None
    idle_timeout: float | None
    ssl_context: ssl.SSLContext | None
    # ThreadPoolMixIn
    max_workers: int
    max_queue: int | None
    # PreforkMixIn
    workers: int


#: Settings that mean something only on a stream server.  A datagram server
#: inherits them from TCPServer as inert class attributes (as in the
#: stdlib's hierarchy), but does not take them as keywords: asking a UDP
#: server for a connection limit is a mistake worth saying.
STREAM_ONLY = frozenset(
    ("tcp_nodelay", "max_connections", "idle_timeout", "ssl_context", "ssl_handshake_timeout")
)

#: The longest timeout a socket takes (socket.settimeout() overflows
#: beyond it); the same bound as threading's.
MAX_TIMEOUT = threading.TIMEOUT_MAX


# ---------------------------------------------------------------------------
# The rules: (value, owner) -> value, where owner names the setting
# ("MyServer.max_workers") for the message.
# ---------------------------------------------------------------------------

def _is_int(value: object) -> bool:
    # numbers.Integral takes numpy's integers too; bool is an int to Python,
    # but True workers is a mistake, not a count.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _refuse(value: object, owner: str, allowed: str, right_type: bool) -> NoReturn:
    error = ValueError if right_type else TypeError
    raise error(f"{owner} must be {allowed}, not {value!r}")


def check_int(value: Any, owner: str, minimum: int, none_means: str | None = None) -> Any:
    """``value`` if it is an int >= ``minimum`` (or None, when ``none_means``
    says what None means)."""
    if value is None and none_means is not None:
        return value
    if _is_int(value) and value >= minimum:
        return value
    allowed = f"an int >= {minimum}"
    if none_means is not None:
        allowed = f"None ({none_means}) or {allowed}"
    _refuse(value, owner, allowed, _is_int(value))


def check_seconds(value: Any, owner: str, none_means: str) -> Any:
    """``value`` if it is None or a number of seconds > 0 that a socket's
    timeout can hold."""
    if value is None:
        return value
    # (NaN and infinity fail the comparisons.)
    if _is_real(value) and 0 < value <= MAX_TIMEOUT:
        return value
    _refuse(value, owner, f"None ({none_means}) or a number of seconds > 0", _is_real(value))


def check_bool(value: Any, owner: str) -> bool:
    if value is True or value is False:
        return value
    raise TypeError(f"{owner} must be True or False, not {value!r}")


def check_ssl_context(value: Any, owner: str) -> Any:
    """``value`` if it is None or a server-side ``ssl.SSLContext``.

    ``ssl`` is not imported to check None, nor at all: a context can only
    exist once ``ssl`` has been imported by whoever made it.
    """
    if value is None:
        return value
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(value, ssl.SSLContext):
        raise TypeError(f"{owner} must be None or an ssl.SSLContext, not {value!r}")
    if value.protocol == ssl.PROTOCOL_TLS_CLIENT:
        # wrap_socket(server_side=True) would fail for every connection.
        raise ValueError(
            f"{owner} is a client-side context (PROTOCOL_TLS_CLIENT); a server needs "
            "ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) or "
            "ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)"
        )
    return value


def check_tls_transport(ssl_context: object, socket_type: object, owner: str) -> None:
    """TLS needs a byte stream: ValueError for ``ssl_context`` set on a
    datagram server.  Serving plaintext where TLS was asked for would be
    worse than not serving."""
    if ssl_context is not None and socket_type != socket.SOCK_STREAM:
        raise ValueError(
            f"{owner} is set, but TLS needs a stream server (TCPServer, "
            "UnixStreamServer or a subclass); DTLS is not supported"
        )


Rule = Callable[[Any, str], Any]

#: Every setting's rule, by name.
RULES: Mapping[str, Rule] = {
    # servers.BaseServer
    "overload": check_overload,
    "ssl_handshake_timeout": lambda value, owner: check_seconds(
        value, owner, "the socket's own timeout"),
    # servers.TCPServer
    "tcp_nodelay": check_bool,
    # 0 is refused rather than read as "no limit" (None says that): a limit
    # of zero connections reads as "serve nobody", and meaning the opposite
    # silently is a trap.
    "max_connections": lambda value, owner: check_int(value, owner, 1, "no limit"),
    "idle_timeout": lambda value, owner: check_seconds(value, owner, "no timeout"),
    "ssl_context": check_ssl_context,
    # pool.ThreadPoolMixIn
    "max_workers": lambda value, owner: check_int(value, owner, 1),
    "max_queue": lambda value, owner: check_int(value, owner, 0, "4 per worker"),
    # green.GreenMixIn
    "green_slow_callback": lambda value, owner: check_seconds(value, owner, "off"),
    # workers.PreforkMixIn
    "workers": lambda value, owner: check_int(value, owner, 1),
    # handlers.StreamRequestHandler
    "max_line_length": lambda value, owner: check_int(value, owner, 1, "no limit"),
}


# ---------------------------------------------------------------------------
# Which settings a class has, and checking them
# ---------------------------------------------------------------------------

def settings_of(cls: type) -> list[str]:
    """The names of the settings of ``cls``: those its classes define, in
    MRO order from the base."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name in klass.__dict__.get("_fastserver_settings", ()):
            if name not in names:
                names.append(name)
    return names


def _is_stream(obj: object) -> bool:
    return getattr(obj, "socket_type", socket.SOCK_STREAM) == socket.SOCK_STREAM


def _check(obj: object, owner_class: type, name: str, value: object) -> Any:
    owner = f"{owner_class.__name__}.{name}"
    value = RULES[name](value, owner)
    if name == "ssl_context":
        check_tls_transport(value, getattr(obj, "socket_type", socket.SOCK_STREAM), owner)
    return value


def check_setting(obj: object, name: str) -> Any:
    """The value of the setting ``name`` of ``obj`` (an instance), checked."""
    return _check(obj, type(obj), name, getattr(obj, name))


def blame_setting(obj: object, name: str) -> None:
    """In an ``except`` block for an error that a bad setting may have
    caused: if the setting ``name`` of ``obj`` is bad, raise the error that
    names it instead of the one being handled (whose message cannot).
    Returns when the setting is fine: the caller re-raises its own."""
    try:
        check_setting(obj, name)
    except (TypeError, ValueError) as named:
        raise named from None


def check_instance(obj: object) -> None:
    """Check every setting of ``obj``, an instance (a server at construction
    or when its loop starts; a handler)."""
    for name in settings_of(type(obj)):
        _check(obj, type(obj), name, getattr(obj, name))


def check_class(cls: type) -> None:
    """Check the settings of ``cls`` that have values on the class itself
    (``__init_subclass__``).  A descriptor (a property that computes the
    value per instance, say) is left for the instance check."""
    for name in settings_of(cls):
        value = getattr(cls, name, None)
        if hasattr(type(value), "__get__"):
            continue
        _check(cls, cls, name, value)


def apply_keywords(obj: object, keywords: Mapping[str, object]) -> None:
    """Set the settings given to a server's constructor as keyword arguments
    on ``obj`` (instance attributes, as if assigned before the constructor
    ran); they are checked with the rest by check_instance().  TypeError
    for a keyword that is not a setting of the class."""
    if not keywords:
        return
    cls = type(obj)
    known = settings_of(cls)
    for name in keywords:
        if name not in known:
            raise TypeError(
                f"{cls.__name__}() got an unexpected keyword argument {name!r} "
                f"(its settings: {', '.join(sorted(known)) or 'none'})"
            )
        if name in STREAM_ONLY and not _is_stream(cls):
            raise TypeError(
                f"{cls.__name__}() got the keyword argument {name!r}, "
                "a setting of stream servers only"
            )
    for name, value in keywords.items():
        setattr(obj, name, value)
