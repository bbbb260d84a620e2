"""The engine room: which core serves, and each server's state in it.

One switch selects a core as a whole (its loop, poller, waker, and, through
``on_core_switch``, the request handlers' steps and file objects): the
compiled ``_core`` where it was built, else the pure-Python twin
``_core_py``; ``FASTSERVER_NO_EXTENSIONS=1`` selects the twin without even
importing the compiled core.  ``use_core()`` switches at run time (the test
suite runs every behaviour on both).

Each server gets a ``ServerEngine`` in each process: its waker (so that
``shutdown()`` can always reach the loop), its open connections and the
datagrams a loop left over.  It is the ``LoopState`` of ``_contract`` that
the core's ``serve_forever`` works on, with the ``Plan`` that ``_plan``
decides when the loop starts.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from . import _core_py as python_core
from ._contract import Core
from ._forksafe import ForkSafeLock
from ._plan import plan_for
from .connections import OpenConnections

if TYPE_CHECKING:
    from ._typing import Datagram


def _import_compiled_core() -> ModuleType | None:
    """The compiled core, or None where it was not built or was switched off
    (``FASTSERVER_NO_EXTENSIONS=1`` does not even import it)."""
    if os.environ.get("FASTSERVER_NO_EXTENSIONS"):
        return None
    try:
        from . import _core
    except ImportError:  # installed without it (Windows, FASTSERVER_NO_EXTENSIONS=1)
        return None
    return _core


#: The compiled core, or None (see _import_compiled_core).
compiled_core: ModuleType | None = _import_compiled_core()

#: The core new loops use (change it with use_core()).
core: Core = cast(Core, python_core if compiled_core is None else compiled_core)

#: "c" when the compiled core serves by default, "python" for the twin.
CORE_IMPLEMENTATION = "python" if compiled_core is None else "c"

_core_switch_callbacks: list[Callable[[Any], None]] = []


def on_core_switch(callback: Callable[[Any], None]) -> None:
    """Call ``callback(core)`` now and whenever use_core() switches: the
    modules above the engine (the handlers' steps) follow the switch."""
    _core_switch_callbacks.append(callback)
    callback(core)


def use_core(new_core: ModuleType | Core) -> None:
    """Serve new loops, and new handlers, on ``new_core`` (``compiled_core``
    or ``python_core``).  Loops already running finish on the old one."""
    global core
    core = cast(Core, new_core)
    for callback in _core_switch_callbacks:
        callback(new_core)


class ServerEngine:
    """The per-server, per-process state the core needs beyond the stdlib's
    attributes (``_contract.LoopState``).

    The waker lives as long as the server so that ``shutdown()`` can always
    reach the loop.  A forked child gets a fresh one: the parent's eventfd is
    shared across fork, and a child draining it would steal the parent's
    wake-up.
    """

    __slots__ = ("core", "pid", "waker", "connections", "leftover_datagrams",
                 "loops_running", "close_pending", "_lock")

    def __init__(self, core: Core) -> None:
        self.core = core
        self.pid = os.getpid()
        self.waker = core.Waker()
        self.connections = OpenConnections(self.waker.wake)
        # Datagrams a loop received in a batch but did not get to serve
        # (a handler raised KeyboardInterrupt): the next loop serves them.
        self.leftover_datagrams: list[Datagram] = []
        self.loops_running = 0
        self.close_pending = False
        self._lock = threading.Lock()

    def close(self) -> None:
        # A running loop may still poll the waker's fd; closing it there
        # could let the number be reused by an unrelated fd.  The last loop
        # to leave closes it instead.
        with self._lock:
            if self.loops_running:
                self.close_pending = True
            else:
                self.waker.close()

    @contextlib.contextmanager
    def loop_running(self) -> Iterator[ServerEngine]:
        """Count a loop that polls the waker, so close() leaves its fd open
        until the last such loop has left."""
        with self._lock:
            self.loops_running += 1
        try:
            yield self
        finally:
            with self._lock:
                self.loops_running -= 1
                if self.close_pending and not self.loops_running:
                    self.close_pending = False
                    self.waker.close()


# Making a server's engine is check-then-act: two threads (a loop starting,
# a drain()) must not make two, one of which would go unwoken.  Rare, so
# one lock for all servers.
_engines_lock = ForkSafeLock()


def _stored_engine(server: Any) -> ServerEngine | None:
    # d[key], not d.get(key): on free-threaded 3.13 dict.get() takes the
    # dict's lock and subscription does not, and every close of every
    # handler thread looks here.
    try:
        engine: ServerEngine = server.__dict__["_fastserver_engine"]
    except KeyError:
        return None
    return engine


def engine_for(server: Any) -> ServerEngine:
    """The server's engine, made on first use (and anew in a forked child)."""
    engine = _stored_engine(server)
    if engine is not None and engine.pid == os.getpid() and engine.core is core:
        return engine
    with _engines_lock:
        engine = _stored_engine(server)
        if engine is None or engine.pid != os.getpid() or engine.core is not core:
            if engine is not None and engine.pid == os.getpid():
                engine.close()  # the core was switched (tests do): retire the old waker
            engine = server.__dict__["_fastserver_engine"] = ServerEngine(core)
        return engine


def _engine_in_this_process(server: Any) -> ServerEngine | None:
    """The server's engine if this process has made one, without making it."""
    engine = _stored_engine(server)
    if engine is not None and engine.pid == os.getpid():
        return engine
    return None


def connections_of(server: Any) -> OpenConnections:
    """The server's OpenConnections in this process."""
    return engine_for(server).connections


def connection_closed(server: Any, request: object) -> None:
    """``request`` no longer counts as open.  Never makes an engine (and its
    waker fds) for that: a server without one in this process counted
    nothing, and a request refused after server_close() must not leak one."""
    engine = _engine_in_this_process(server)
    if engine is not None:
        engine.connections.discard(request)


@contextlib.contextmanager
def loop_running(server: Any) -> Iterator[ServerEngine]:
    """The server's engine, for a loop that polls its waker: server_close()
    in another thread must not close the waker's fd under that loop (the
    number could be reused); the last loop to leave closes it instead."""
    with engine_for(server).loop_running() as engine:
        yield engine


def serve_forever(server: Any, poll_interval: float | None) -> None:
    """Run the core's loop for ``server`` until shutdown()."""
    with loop_running(server) as engine:
        engine.core.serve_forever(server, poll_interval, plan_for(server), engine)


def wake(server: Any) -> None:
    """Interrupt a running ``serve_forever`` of this server, if any."""
    engine = _engine_in_this_process(server)
    if engine is not None:
        engine.waker.wake()


def close(server: Any) -> None:
    """The server is closed: retire its waker once no loop polls it."""
    engine = _engine_in_this_process(server)
    if engine is not None:
        engine.close()


def running_green_hub() -> Any:
    """The green hub serving in this thread (a green serve_forever() loop
    runs here, and the caller is in one of its greenlets or the loop), or
    None."""
    running_hub = getattr(core, "running_hub", None)
    return None if running_hub is None else running_hub()
