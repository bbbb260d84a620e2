"""Green handlers: blocking handlers at event-loop cost.

``GreenMixIn`` serves each connection's request chain (finish_request(),
the handler, handle_error(), shutdown_request(): ThreadingMixIn's
process_request_thread) in a greenlet of the ``greenlet`` package instead
of a thread.  The handler is written as for threads: its socket and its
``rfile``/``wfile`` block as usual, but a call that would block parks the
greenlet in the serve loop's poller and lets the loop serve the others.
An idle connection costs a parked greenlet (a few KiB), not a thread.

What must not run in a green handler: blocking work that is not on the
handler's own socket (a file or database call, ``time.sleep``, a socket the
handler opened itself) stops every connection while it runs.  Hand it to
``run_in_thread()``; wait with ``sleep()``.  ``green_slow_callback``
logs a handler that holds the loop longer than that many seconds.

Green servers need fastserver's compiled core and the ``greenlet`` package
(``pip install 'fastserver[green]'``); without either, constructing one
raises RuntimeError saying which.  There is no silent fallback to threads:
a server sized for 10,000 idle connections would start 10,000 threads.
greenlet does not build on free-threaded CPython 3.13t.
"""
from __future__ import annotations

import concurrent.futures
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import _engine
from ._forksafe import ForkSafeLock
from .mixins import ThreadingMixIn
from .servers import TCPServer

if TYPE_CHECKING:
    import socketserver

    from ._typing import RequestType, RetAddress

    _ServerMixIn = socketserver.BaseServer
else:
    _ServerMixIn = object

__all__ = ["GreenMixIn", "GreenTCPServer", "run_in_thread", "sleep"]

_T = TypeVar("_T")

#: Threads of run_in_thread(), shared by the green servers of a process.
BLOCKING_WORKERS = 16


def green_unavailable() -> str | None:
    """Why green handlers cannot run here, or None when they can."""
    # Only the compiled core has them (it is not the twin's contract).
    import_greenlet = getattr(_engine.core, "import_greenlet", None)
    if import_greenlet is None:
        return ("green handlers run on fastserver's compiled core, and this "
                "process uses the pure-Python one (FASTSERVER_NO_EXTENSIONS is "
                "set, or the extension was not built)")
    try:
        import_greenlet()
    except ImportError:
        return ("green handlers need the greenlet package: "
                "pip install 'fastserver[green]'")
    return None


class GreenMixIn(_ServerMixIn):
    """Mix-in class to handle each connection in a greenlet of the serve loop.

    The hooks run as with ThreadingMixIn (process_request() hands the
    chain over; finish_request(), handle_error() and shutdown_request()
    run in the connection's greenlet).  When the loop stops, the handlers
    in flight run to their end before serve_forever() returns
    (``block_on_close``, as ThreadingMixIn's server_close() joins its
    threads; ``shutdown(timeout=...)`` cuts them at its deadline), or are
    ended at once with ``block_on_close = False`` (GreenletExit is raised
    where each waits: its finally blocks and shutdown_request() run).
    """

    #: Serve the handlers in flight to their end when the loop stops.
    block_on_close = True
    #: Log (``fastserver.green`` logger, WARNING) each time a handler runs
    #: longer than this many seconds without waiting: blocking work that
    #: holds every other connection.  None: off (it costs two clock reads
    #: per switch).
    green_slow_callback: float | None = None

    _fastserver_settings: ClassVar[tuple[str, ...]] = ("green_slow_callback",)
    #: Read by the planner (_plan.py): the loop runs a hub and accepts
    #: green sockets.
    _fastserver_green: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        reason = green_unavailable()
        if reason is not None:
            raise RuntimeError(f"{type(self).__name__}: {reason}")
        super().__init__(*args, **kwargs)

    def process_request(self, request: RequestType, client_address: RetAddress) -> None:
        """Start a greenlet to process the request."""
        hub = _engine.running_green_hub()
        if hub is None:
            # handle_request(): no loop to switch to; serve it here, as
            # BaseServer.process_request does.
            self.process_request_green(request, client_address)
            return
        hub.spawn(self.process_request_green, (request, client_address))

    #: The chain a greenlet runs: ThreadingMixIn's, the same function.
    process_request_green = ThreadingMixIn.process_request_thread


class GreenTCPServer(GreenMixIn, TCPServer):
    pass


if hasattr(socket, "AF_UNIX"):
    from .servers import UnixStreamServer

    class GreenUnixStreamServer(GreenMixIn, UnixStreamServer):
        pass

    __all__.append("GreenUnixStreamServer")


# ---------------------------------------------------------------------------
# What a green handler calls instead of blocking
# ---------------------------------------------------------------------------

def sleep(seconds: float) -> None:
    """``time.sleep()`` that lets the loop serve the other connections
    meanwhile (in a green handler; elsewhere it is time.sleep)."""
    hub = _engine.running_green_hub()
    if hub is None:
        time.sleep(seconds)
    else:
        hub.sleep(seconds)


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = ForkSafeLock()


def _blocking_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                BLOCKING_WORKERS, thread_name_prefix="fastserver-green")
        return _executor


def _forget_executor_in_child() -> None:
    # The parent's threads do not exist in a forked child (a prefork worker).
    global _executor
    _executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor_in_child)


def run_in_thread(func: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``func(*args, **kwargs)`` on a thread of a shared pool, while the
    calling green handler waits and the loop serves the others; returns
    its result or raises its exception.  Outside a green handler, calls it
    directly."""
    hub = _engine.running_green_hub()
    if hub is None:
        return func(*args, **kwargs)
    result: _T = hub.run_in_thread(_blocking_executor(), func, args, kwargs)
    return result
