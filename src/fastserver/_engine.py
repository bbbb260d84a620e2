"""Choose the core (compiled or pure-Python twin) and glue servers to it.

Both cores expose the same interface:

``Waker()``
    a wake-up fd (eventfd or self-pipe): ``fileno()``, ``wake()``,
    ``drain()``, ``close()``.  ``wake()`` after ``close()`` does nothing.
``Poller(backend=None)``
    readiness for a few fds: ``register(fd)``, ``unregister(fd)``,
    ``wait(timeout) -> list of ready fds``, ``close()``, ``backend``.
    ``backend=None`` means ``$FASTSERVER_POLLER`` or the platform's best.
``Plan(*, handle_one=None, accept="call", verify_default=False,
process_default=False, finish_default=False, shutdown="call",
service_actions_default=False, listener=None)``
    which steps of the request chain the core may do itself; made by
    ``fastserver._plan.plan_for`` (the fast-path rule lives there).
``serve_forever(server, poll_interval, waker, plan)``
    the serve loop.
``handle_request_noblock(server) -> int``
    the stdlib's ``_handle_request_noblock`` chain; returns HANDLED, or
    BACK_OFF when ``get_request`` failed because the process or system ran
    out of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays
    readable, so the loop pauses accepting instead of spinning), or
    LISTENER_CLOSED when the listening socket was closed under the loop.
``wait_readable(fd, timeout) -> bool``
    wait until one fd is readable; EINTR retried with the timeout adjusted.

The environment picks the default core: ``FASTSERVER_NO_EXTENSIONS=1``
selects the twin; otherwise the compiled core is used when it was built.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from . import _core_py as python_core
from ._plan import plan_for
from .connections import OpenConnections

if TYPE_CHECKING:
    import socket

    from ._typing import Datagram
    from .servers import BaseServer


# ---------------------------------------------------------------------------
# The interface both cores implement, for the type checker (the module
# docstring above says the same in words).  Each core is a module; mypy
# checks that both modules match these protocols.
# ---------------------------------------------------------------------------
class Waker(Protocol):
    def fileno(self) -> int: ...
    def wake(self) -> None: ...
    def drain(self) -> None: ...
    def close(self) -> None: ...


class Poller(Protocol):
    @property
    def backend(self) -> str: ...
    def register(self, fd: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def wait(self, timeout: float | None) -> list[int]: ...
    def close(self) -> None: ...


class Core(Protocol):
    def Waker(self) -> Waker: ...
    def Poller(self, backend: str | None = None) -> Poller: ...
    def Plan(
        self,
        *,
        handle_one: Callable[[], object] | None = None,
        accept: str = "call",
        verify_default: bool = False,
        process_default: bool = False,
        finish_default: bool = False,
        shutdown: str = "call",
        service_actions_default: bool = False,
        listener: socket.socket | None = None,
        tcp_nodelay: bool = False,
        idle_timeout: float | None = None,
        connections: OpenConnections | None = None,
        max_connections: int | None = None,
        overload: str = "wait",
        leftover_datagrams: list[Datagram] | None = None,
    ) -> object: ...
    # ``waker`` and ``plan`` are the same core's own Waker and Plan (each
    # core's serve_forever takes only its own), which no protocol can say.
    def serve_forever(
        self, server: BaseServer, poll_interval: float | None, waker: Any, plan: Any
    ) -> None: ...
    def handle_request_noblock(self, server: BaseServer) -> int: ...
    def wait_readable(self, fd: int, timeout: float | None) -> bool: ...
    def choose_backend(self, backend: str | None = None) -> str: ...


def _import_compiled_core() -> Core | None:
    """The compiled core, or None where it was not built or was switched off
    (``FASTSERVER_NO_EXTENSIONS=1`` does not even import it)."""
    if os.environ.get("FASTSERVER_NO_EXTENSIONS"):
        return None
    try:
        from . import _core
    except ImportError:  # no compiler at install time, or an unsupported platform
        return None
    return _core


#: The compiled core, or None (see _import_compiled_core).
compiled_core = _import_compiled_core()

#: The core new loops use.
core: Core = python_core if compiled_core is None else compiled_core

#: "c" when the compiled core serves by default, "python" for the twin.
CORE_IMPLEMENTATION = "python" if core is python_core else "c"


class ServerEngine:
    """The per-server state the core needs beyond the stdlib's attributes.

    The waker lives as long as the server so that ``shutdown()`` can always
    reach the loop.  A forked child gets a fresh one: the parent's eventfd is
    shared across fork, and a child draining it would steal the parent's
    wake-up.
    """

    __slots__ = ("core", "pid", "waker", "connections", "leftover_datagrams",
                 "loops_running", "close_pending")

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

    def close(self) -> None:
        # A running loop may still poll the waker's fd; closing it there
        # could let the number be reused by an unrelated fd.  The last loop
        # to leave closes it instead.
        if self.loops_running:
            self.close_pending = True
        else:
            self.waker.close()


def engine_for(server: BaseServer) -> ServerEngine:
    """The server's engine, made on first use (and anew in a forked child)."""
    engine: ServerEngine | None = server.__dict__.get("_fastserver_engine")
    if engine is None or engine.pid != os.getpid() or engine.core is not core:
        if engine is not None and engine.pid == os.getpid():
            engine.close()  # the core was switched (tests do): retire the old waker
        engine = server.__dict__["_fastserver_engine"] = ServerEngine(core)
    return engine


def connections_of(server: BaseServer) -> OpenConnections:
    """The server's OpenConnections in this process."""
    return engine_for(server).connections


def connection_closed(server: BaseServer, request: object) -> None:
    """``request`` no longer counts as open.  Never makes an engine (and its
    waker fds) for that: a server without one in this process counted
    nothing, and a request refused after server_close() must not leak one."""
    engine: ServerEngine | None = server.__dict__.get("_fastserver_engine")
    if engine is not None and engine.pid == os.getpid():
        engine.connections.discard(request)


@contextlib.contextmanager
def loop_running(server: BaseServer) -> Iterator[ServerEngine]:
    """The server's engine, for a loop that polls its waker: server_close()
    in another thread must not close the waker's fd under that loop (the
    number could be reused); the last loop to leave closes it instead."""
    engine = engine_for(server)
    engine.loops_running += 1
    try:
        yield engine
    finally:
        engine.loops_running -= 1
        if engine.close_pending and not engine.loops_running:
            engine.close_pending = False
            engine.waker.close()


def serve_forever(server: BaseServer, poll_interval: float | None) -> None:
    with loop_running(server) as engine:
        plan = plan_for(server, engine.core, engine.connections, engine.leftover_datagrams)
        engine.core.serve_forever(server, poll_interval, engine.waker, plan)


def wake(server: BaseServer) -> None:
    """Interrupt a running ``serve_forever`` of this server, if any."""
    engine: ServerEngine | None = server.__dict__.get("_fastserver_engine")
    if engine is not None and engine.pid == os.getpid():
        engine.waker.wake()


def close(server: BaseServer) -> None:
    engine: ServerEngine | None = server.__dict__.get("_fastserver_engine")
    if engine is not None and engine.pid == os.getpid():
        engine.close()
