"""ThreadPoolMixIn: serve requests on a bounded pool of reusable threads.

``ThreadingMixIn`` starts a thread per request: tens of microseconds each,
and nothing bounds how many run at once.  ``ThreadPoolMixIn`` keeps the
same hooks, in the same order and on the same threads (``process_request``
hands off and returns; ``process_request_thread`` runs ``finish_request``,
``handle_error`` and ``shutdown_request`` on a worker), but hands each
request to at most ``max_workers`` long-lived threads, with at most
``max_queue`` more requests waiting for one of them.  When both are full,
``overload`` decides: ``"wait"`` (stop accepting until a worker is free) or
``"refuse"`` (``handle_overload()``, which closes the connection).
"""
from __future__ import annotations

import enum
import os
import socket
import sys
import threading
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, Union, cast

from . import _settings
from ._contract import Overload
from ._forksafe import ForkSafeLock
from .mixins import ThreadingMixIn
from .servers import BaseServer, TCPServer, UDPServer

if TYPE_CHECKING:
    import socketserver

    from ._typing import RequestType, RetAddress

    # The mix-in goes before a server class in the bases: for the type
    # checker it is a server, the stdlib's kind, since it works on any
    # (fastserver's servers are such, to mypy).
    _ServerMixIn = socketserver.BaseServer
else:
    _ServerMixIn = object

__all__ = [
    "ThreadPoolMixIn",
    "ThreadPoolStatus",
    "ThreadPoolTCPServer",
    "ThreadPoolUDPServer",
]

#: concurrent.futures.ThreadPoolExecutor's default: enough threads to
#: overlap I/O waits on a small machine, capped for a large one.
DEFAULT_MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)

#: ``max_queue = None`` means this many queued requests per worker (see
#: ThreadPoolMixIn.max_queue for why).
QUEUE_PER_WORKER = 4


class ThreadPoolStatus(NamedTuple):
    """A snapshot of a server's thread pool.

    workers      worker threads alive
    idle         workers waiting for a request
    queued       requests accepted and waiting for a busy worker to finish
    in_flight    requests handed to the pool and not finished (running + queued)
    max_workers, max_queue   the pool's limits
    """

    workers: int
    idle: int
    queued: int
    in_flight: int
    max_workers: int
    max_queue: int


# ---------------------------------------------------------------------------
# Fork safety.  A pool's threads exist only in the process that started
# them, so a forked child (PreforkMixIn's workers, say) must start its own.
# Comparing a counter that only fork bumps is cheaper on every request than
# os.getpid() (a system call).
# ---------------------------------------------------------------------------
_fork_generation = 0
# Guards pool creation (a slow path).
_pool_creation_lock = ForkSafeLock()
# Pools with threads that may still be waiting for work (see _close_at_exit).
_live_pools: weakref.WeakSet[_WorkerPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_at_exit() -> None:
    """Let idle workers exit when the interpreter does.

    Non-daemon threads are joined before the interpreter exits; an idle
    worker waits for work forever, so a program that never called
    server_close() would never end.  threading runs these callbacks before
    that join (concurrent.futures relies on the same hook), and the workers
    finish the requests they already have first.
    """
    for pool in list(_live_pools):
        if pool.generation == _fork_generation:
            pool.close()


# A private hook of threading (3.9+); without it, call server_close().
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_close_at_exit)


# ---------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------

class _Stop(enum.Enum):
    STOP = "stop"


_STOP: Final = _Stop.STOP  # the task that tells a worker to exit

if TYPE_CHECKING:
    #: What a worker is handed: a request, or _STOP.
    _Task = Union[tuple[RequestType, RetAddress], _Stop]


def _report_uncaught(exc: BaseException) -> None:
    """Report an exception that escaped process_request_thread() the way
    an uncaught exception of a ThreadingMixIn thread is reported, by
    threading.excepthook (which ignores SystemExit).  The worker lives on."""
    args = threading.ExceptHookArgs(
        [type(exc), exc, exc.__traceback__, threading.current_thread()]
    )
    try:
        threading.excepthook(args)
    except Exception:  # a broken hook: report that, as threading itself does
        try:
            sys.excepthook(*sys.exc_info())
        except Exception:
            pass  # nothing left to report with; the worker must live on


class _WorkerPool:
    """Worker threads that run ``server.process_request_thread``.

    Counters, all guarded by ``_lock``:

    in_flight  requests accepted by submit() and not finished yet
    workers    threads started and not exited
    idle       workers waiting for a task that no request has claimed yet
    queued     tasks in the queue that wait for a busy worker to finish

    Every task put in the queue is claimed by exactly one worker: an idle
    one (``idle -= 1`` in submit) or the next worker to finish one (``queued
    -= 1`` there).  So a thread is started only when no worker is free or
    about to be, and ``idle`` and ``queued`` are never both above zero.
    The hand-off is a SimpleQueue put under a plain lock; the Condition is
    touched only when the pool is full.
    """

    def __init__(self, server: ThreadPoolMixIn, max_workers: int, max_queue: int) -> None:
        self.generation = _fork_generation
        self.max_workers = max_workers
        self.max_queue = max_queue
        self._server = server
        self._capacity = max_workers + max_queue
        self._tasks: SimpleQueue[_Task] = SimpleQueue()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # "in_flight went down"
        self._threads: list[threading.Thread] = []
        self._in_flight = self._workers = self._idle = self._queued = 0
        self._submitters_waiting = 0
        self._closed = False
        self._refusing_waits = False
        _live_pools.add(self)

    # -- the serving thread's side ---------------------------------------
    def submit(self, request: RequestType, client_address: RetAddress) -> bool:
        """Hand a request to a worker; False when the pool cannot take it
        (full with the "refuse" policy, or closed): the caller refuses it."""
        with self._lock:
            if self._in_flight < self._capacity and not self._closed:
                self._assign((request, client_address))
                return True
        return self._submit_when_full(request, client_address)

    def _assign(self, task: _Task) -> None:
        """Give ``task`` to an idle worker, a new one, or the queue (lock held)."""
        self._in_flight += 1
        if self._idle:
            self._idle -= 1
            self._tasks.put(task)
        elif self._workers < self.max_workers:
            self._start_worker(task)
        else:
            self._queued += 1
            self._tasks.put(task)

    def _start_worker(self, first_task: _Task) -> None:
        # Started under the lock: a few dozen microseconds, at most
        # max_workers times, and close() then never sees a thread that is
        # listed but not started (join() would fail on it).
        thread = threading.Thread(
            target=self._work,
            args=(first_task,),
            name="%s worker %d" % (type(self._server).__name__, len(self._threads) + 1),
            daemon=bool(self._server.daemon_threads),
        )
        self._threads.append(thread)
        self._workers += 1
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": out of threads or memory
            self._threads.remove(thread)
            self._workers -= 1
            if not self._workers:
                self._in_flight -= 1
                raise  # nobody to run it: the loop's handle_error() reports it
            self._queued += 1  # a running worker will get to it
            self._tasks.put(first_task)

    def _submit_when_full(self, request: RequestType, client_address: RetAddress) -> bool:
        if self._closed or _overload_policy(self._server) == "refuse":
            return False
        with self._lock:
            self._submitters_waiting += 1
            try:
                while (
                    self._in_flight >= self._capacity
                    and not self._closed
                    and not self._refusing_waits
                ):
                    self._room.wait()
            finally:
                self._submitters_waiting -= 1
            if self._closed or self._refusing_waits:
                return False
            self._assign((request, client_address))
            return True

    def refuse_waits(self, refuse: bool) -> None:
        """While ``refuse`` is true, a submit() waiting for room gives up
        (returns False): shutdown() must not wait for a busy worker."""
        with self._lock:
            self._refusing_waits = refuse
            if refuse:
                self._room.notify_all()

    def close(self) -> list[threading.Thread]:
        """Take no more requests; the workers finish the ones they have and
        the queued ones, then exit.  Returns the threads, to join."""
        with self._lock:
            if not self._closed:
                self._closed = True
                # Behind every queued task, one stop per worker: FIFO order
                # means each worker exits only once the queue is drained.
                for _ in range(self._workers):
                    self._tasks.put(_STOP)
                self._room.notify_all()
            return list(self._threads)

    def status(self) -> ThreadPoolStatus:
        with self._lock:
            return ThreadPoolStatus(
                self._workers, self._idle, self._queued, self._in_flight,
                self.max_workers, self.max_queue,
            )

    # -- the workers' side --------------------------------------------------
    def _work(self, task: _Task | None) -> None:
        get_task = self._tasks.get
        try:
            while True:
                if task is None:
                    task = get_task()  # blocks without a timeout: no CPU while idle
                if task is _STOP:
                    return
                self._run(task)
                task = None  # an idle worker must not keep the request alive
                self._finished_one()
        finally:
            with self._lock:
                self._workers -= 1
                if task is _STOP:
                    self._idle -= 1  # only an idle worker can get a stop (see close)
                self._threads.remove(threading.current_thread())

    def _run(self, task: tuple[RequestType, RetAddress]) -> None:
        request, client_address = task
        try:
            self._server.process_request_thread(request, client_address)
        except BaseException as exc:  # what would end a ThreadingMixIn thread
            _report_uncaught(exc)

    def _finished_one(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._queued:
                self._queued -= 1  # this worker takes a queued task next
            else:
                self._idle += 1
            if self._submitters_waiting:
                self._room.notify()


def _overload_policy(server: ThreadPoolMixIn) -> Overload:
    policy: Overload = _settings.check_setting(server, "overload")
    return policy


def _pool_limits(server: ThreadPoolMixIn) -> tuple[int, int]:
    """(max_workers, max_queue) of ``server``, checked, with max_queue=None resolved.

    The server's constructor checked them already; read again here because
    the pool starts at the first request, and they may be set until then.
    """
    max_workers = int(_settings.check_setting(server, "max_workers"))
    max_queue = _settings.check_setting(server, "max_queue")
    if max_queue is None:
        return max_workers, QUEUE_PER_WORKER * max_workers
    return max_workers, int(max_queue)


# ---------------------------------------------------------------------------
# The mix-in
# ---------------------------------------------------------------------------
class ThreadPoolMixIn(_ServerMixIn):
    """Mix-in class to handle each request on a bounded pool of threads.

    Like ThreadingMixIn, but the threads are started on demand, reused, and
    bounded.  The limits are read when the pool starts (at the first
    request), so they may be set on the class or on the instance before it.
    """

    #: Worker threads at most.  Started lazily (only when no worker is free)
    #: and kept until server_close().
    max_workers = DEFAULT_MAX_WORKERS
    #: Requests accepted but waiting for a worker, at most.  None means
    #: 4 * max_workers: enough to absorb a burst of short requests without
    #: hitting ``overload`` (the kernel's backlog, request_queue_size, is
    #: only 5 by default), and short enough that a queued request waits
    #: about four handler runs, not for ever.  Beyond it clients wait in the
    #: kernel's backlog ("wait"), where they cost no fd and no memory here.
    max_queue: int | None = None
    #: What the server does when a capacity limit is reached (here: every
    #: worker busy and max_queue requests waiting).  This attribute and
    #: handle_overload() mean the same on fastserver's BaseServer
    #: (max_connections); they are repeated here so that the mix-in also
    #: works on servers that are not fastserver's (http.server's, say).
    #: "wait"   -- process_request() blocks until there is room, so the loop
    #:             stops accepting and new clients wait in the kernel's
    #:             backlog (a request waiting when shutdown() is called is
    #:             refused instead, so that the loop can stop at once);
    #: "refuse" -- handle_overload() is called for the request.
    overload: Overload = "wait"
    #: The workers' daemon flag, as in ThreadingMixIn.
    daemon_threads = False
    #: If true, server_close() waits until the non-daemon workers have run
    #: every request they were given, as ThreadingMixIn waits for its threads.
    block_on_close = True

    _fastserver_thread_pool: _WorkerPool | None = None  # the pool of the process that started it
    _fastserver_pool_closed = False

    #: The settings above (see fastserver/_settings.py): checked when a
    #: class is defined and when the server is constructed, and keyword
    #: arguments of a fastserver server's constructor.
    _fastserver_settings: ClassVar[tuple[str, ...]] = ("max_workers", "max_queue", "overload")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # fastserver's servers check every setting of theirs, this mix-in's
        # included; a server of another kind (http.server's) gets this check
        # only, and the pool's when it starts.
        if not issubclass(cls, BaseServer):
            _settings.check_class(cls)

    # ThreadingMixIn's own method: a worker runs a request exactly as a
    # ThreadingMixIn thread does (finish_request(), handle_error() on an
    # Exception, shutdown_request() in any case).  Only what becomes of an
    # exception that escapes it differs, and _WorkerPool._run decides that.
    process_request_thread = ThreadingMixIn.process_request_thread

    def process_request(self, request: RequestType, client_address: RetAddress) -> None:
        """Hand the request to a worker thread and return."""
        pool = self._fastserver_thread_pool
        if pool is None or pool.generation != _fork_generation:
            pool = self._start_thread_pool()
        if pool is None or not pool.submit(request, client_address):
            self.handle_overload(request, client_address)

    def handle_overload(self, request: RequestType, client_address: RetAddress) -> None:
        """Called for a request the server will not serve because a capacity
        limit is reached and ``overload`` is "refuse" (or because the server
        was closed).  May be overridden, e.g. to send a "busy" reply first.

        The default calls shutdown_request(): a stream client sees the
        connection closed, a datagram is dropped.
        """
        self.shutdown_request(request)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the serve_forever loop (see BaseServer.shutdown; the
        ``timeout``, a graceful drain, needs fastserver's server classes).

        A request waiting for room in a full pool ("wait") is refused
        through handle_overload(), so that the loop stops now rather than
        when a worker frees up.
        """
        pool = self._live_thread_pool()
        if pool is not None:
            pool.refuse_waits(True)
        try:
            if timeout is None:
                super().shutdown()  # also the stdlib's servers' (no timeout there)
            else:
                # fastserver's BaseServer.shutdown(timeout); to the type
                # checker the mix-in's base is the stdlib's BaseServer.
                cast("Callable[[float], None]", super().shutdown)(timeout)
        finally:
            if pool is not None:
                pool.refuse_waits(False)

    def server_close(self) -> None:
        """Close the server, then let the workers run the requests they
        were given (queued ones included) and exit; wait for them when
        block_on_close is true.  Requests that come later are refused
        through handle_overload()."""
        super().server_close()
        with _pool_creation_lock:
            self._fastserver_pool_closed = True
            pool = self._live_thread_pool()
        if pool is None:
            return
        workers = pool.close()
        if self.block_on_close:
            current = threading.current_thread()  # a handler may close its server
            for thread in workers:
                if not thread.daemon and thread is not current:
                    thread.join()

    def pool_status(self) -> ThreadPoolStatus:
        """A ThreadPoolStatus snapshot: workers, idle, queued, in_flight,
        max_workers, max_queue (zeros until the first request)."""
        pool = self._live_thread_pool()
        if pool is None:
            return ThreadPoolStatus(0, 0, 0, 0, *_pool_limits(self))
        return pool.status()

    def _live_thread_pool(self) -> _WorkerPool | None:
        pool = self._fastserver_thread_pool
        if pool is None or pool.generation != _fork_generation:
            return None
        return pool

    def _start_thread_pool(self) -> _WorkerPool | None:
        """This process's pool, made on first use; None once closed."""
        with _pool_creation_lock:
            pool = self._live_thread_pool()
            if pool is None and not self._fastserver_pool_closed:
                _overload_policy(self)  # a bad setting fails now, not under load
                pool = _WorkerPool(self, *_pool_limits(self))
                self._fastserver_thread_pool = pool
            return pool


class ThreadPoolTCPServer(ThreadPoolMixIn, TCPServer):
    pass


class ThreadPoolUDPServer(ThreadPoolMixIn, UDPServer):
    pass


if hasattr(socket, "AF_UNIX"):
    from .servers import UnixDatagramServer, UnixStreamServer

    class ThreadPoolUnixStreamServer(ThreadPoolMixIn, UnixStreamServer):
        pass

    class ThreadPoolUnixDatagramServer(ThreadPoolMixIn, UnixDatagramServer):
        pass

    __all__ += ["ThreadPoolUnixStreamServer", "ThreadPoolUnixDatagramServer"]
