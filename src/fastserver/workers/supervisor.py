"""The supervisor: the process that called serve_forever(), and the workers
it forks.

It starts ``workers`` processes that each run the server class's own serve
loop, starts a new one when a worker dies (waiting longer each time a
worker dies right after its start, so that a crashing worker cannot make it
fork in a loop), and stops them all on ``shutdown()``, ``server_close()`` or
SIGTERM.  A worker never returns into the caller's code: it ends with
``os._exit()``.  Kept apart from the mix-in, which only hands
serve_forever() over to it, so that the process bookkeeping is in one place.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import monotonic
from typing import TYPE_CHECKING, NoReturn

from .. import _engine, _settings
from .exits import _RUNNING, _exit_status, _ExitWatch, _watch_for_stop
from .listeners import _reuse_port_listeners, _wants_reuse_port

if TYPE_CHECKING:
    from .._contract import Poller
    from ..servers import TCPServer

    class PreforkServer(TCPServer):
        """The server as the supervisor sees it: a socket server (TCPServer
        stands for any server class to the type checker) with PreforkMixIn's
        settings and hook, which the mix-in defines."""

        workers: int
        reuse_port: bool
        worker_stop_timeout: float
        worker_index: int | None

        def worker_exited(self, pid: int, status: int | None) -> None: ...


#: A worker that dies sooner than this (seconds) after it was started counts
#: as a failed start.  Each failed start in a row doubles the wait before the
#: next one, from RESTART_DELAY_MIN up to RESTART_DELAY_MAX; a worker that
#: lived longer is replaced at once.
MIN_UPTIME = 1.0
RESTART_DELAY_MIN = 0.1
RESTART_DELAY_MAX = 5.0

#: The exit status of a worker whose serve loop was stopped from inside
#: (a handler set ``server._BaseServer__shutdown_request``): in one process
#: that stops serve_forever(), so here the supervisor stops every worker.
SHUTDOWN_EXIT_STATUS = 112

# Where a worker's death does not make an fd readable at once (see
# exits._ExitWatch), the supervisor checks its workers at least this often.
_RECHECK_INTERVAL = 1.0
_RECHECK_INTERVAL_WHILE_STOPPING = 0.05
# While stopping, SIGTERM is sent again this often (see _stop_workers).
_SIGTERM_REPEAT_INTERVAL = 0.2


# ---------------------------------------------------------------------------
# The supervisor (the process that called serve_forever)
# ---------------------------------------------------------------------------
class _Worker:
    """One worker slot: its listener, and the process serving it, if any."""

    __slots__ = ("index", "listener", "pid", "watch", "started_at", "failed_starts", "start_at")

    def __init__(self, index: int, listener: socket.socket | None) -> None:
        self.index = index
        self.listener = listener
        self.pid: int | None = None
        self.watch: _ExitWatch | None = None
        self.started_at = 0.0
        self.failed_starts = 0  # in a row
        self.start_at = 0.0  # when to start the next process (if pid is None)

    def schedule_restart(self, now: float) -> None:
        if now - self.started_at < MIN_UPTIME:
            self.failed_starts += 1
        else:
            self.failed_starts = 0
        delay = 0.0
        if self.failed_starts:
            delay = min(RESTART_DELAY_MAX, RESTART_DELAY_MIN * 2 ** (self.failed_starts - 1))
        self.start_at = now + delay


class _Supervisor:
    """The caller's side of serve_forever(): starts, watches, restarts and
    stops the workers, and owns what they share (listeners, pipes)."""

    def __init__(
        self,
        server: PreforkServer,
        poll_interval: float | None,
        serve_loop: Callable[[float | None], None],
    ) -> None:
        self.server = server
        self.poll_interval = poll_interval
        # What each worker runs: the server class's own serve_forever(),
        # which PreforkMixIn's overrides in the supervisor.
        self.serve_loop = serve_loop
        self.pid = os.getpid()
        self.thread_id = threading.get_ident()
        self.engine = _engine.engine_for(server)
        self.poller: Poller | None = None
        self.workers: list[_Worker] = []
        # the SO_REUSEPORT siblings, closed at the end
        self.own_listeners: list[socket.socket] = []
        # server.socket when the workers share it
        self.shared_listener: socket.socket | None = None
        self.shared_listener_timeout: float | None = None
        # a pipe: (read end for the workers, write end kept here)
        self.lifeline: tuple[int, int] | None = None
        self.stopping = False

    # -- the loop ------------------------------------------------------------
    def run(self) -> None:
        """Serve until shutdown(): BaseServer.serve_forever's loop, with
        worker exits as the events."""
        server = self.server
        # Checked when the server was constructed; again here, as it may be
        # set until serve_forever() (the rule is _settings.py's).
        count = int(_settings.check_setting(server, "workers"))
        with _engine.loop_running(server) as engine:
            self.engine = engine
            self._supervise(count)

    def _supervise(self, count: int) -> None:
        server = self.server
        waker = self.engine.waker
        try:
            self.poller = self.engine.core.Poller()
            self.poller.register(waker.fileno())
            waker.drain()  # a shutdown() of an earlier loop may have left a wake-up
            self._open_listeners(count)
            self.lifeline = os.pipe()
            for worker in self.workers:
                self._start(worker, retry_on_failure=False)
            while not server._BaseServer__shutdown_request:
                ready = self.poller.wait(self._wait_timeout())
                if waker.fileno() in ready:
                    waker.drain()
                if self._reap() or server._BaseServer__shutdown_request:
                    break
                now = monotonic()
                for worker in self.workers:
                    if worker.pid is None and worker.start_at <= now:
                        self._start(worker, retry_on_failure=True)
        finally:
            try:
                self._stop_workers()
            finally:
                self._close()

    def _wait_timeout(self) -> float | None:
        timeout = self.poll_interval
        if any(w.watch is not None and not w.watch.exact for w in self.workers):
            timeout = _RECHECK_INTERVAL if timeout is None else min(timeout, _RECHECK_INTERVAL)
        pending = [w.start_at for w in self.workers if w.pid is None]
        if pending:
            until_start = max(0.0, min(pending) - monotonic())
            timeout = until_start if timeout is None else min(timeout, until_start)
        return timeout

    def _open_listeners(self, count: int) -> None:
        server = self.server
        reuse_port_listeners = None
        if count > 1 and _wants_reuse_port(server):
            reuse_port_listeners = _reuse_port_listeners(server, count)
        listeners: Sequence[socket.socket | None]
        if reuse_port_listeners is not None:
            listeners = reuse_port_listeners
            self.own_listeners = reuse_port_listeners[1:]
        else:
            listener = getattr(server, "socket", None)
            listeners = [listener] * count
            if count > 1 and isinstance(listener, socket.socket):
                # Every worker is woken for each connection; the losers must
                # get EAGAIN (ignored, as the stdlib's loop ignores any
                # OSError of get_request()) rather than block in accept().
                self.shared_listener = listener
                self.shared_listener_timeout = listener.gettimeout()
                listener.setblocking(False)
        self.workers = [_Worker(index, listener) for index, listener in enumerate(listeners)]

    # -- starting --------------------------------------------------------------
    def _start(self, worker: _Worker, retry_on_failure: bool) -> None:
        watch = _ExitWatch()
        _flush_standard_streams()  # or the child would print the parent's buffered output too
        try:
            # Blocked across the fork: a SIGTERM or Ctrl-C that reaches the
            # new worker before it has its own handlers waits for them.
            with _signals_blocked(_WORKER_SIGNALS):
                pid = os.fork()
                if pid == 0:
                    _serve_as_worker(self, worker, watch)  # never returns
        except BaseException as exc:
            watch.close()
            if not retry_on_failure or not isinstance(exc, OSError):
                raise
            # Out of processes or memory for now: try again later.
            print("fastserver: cannot start worker %d: %s" % (worker.index, exc), file=sys.stderr)
            worker.started_at = monotonic()
            worker.schedule_restart(worker.started_at)  # counts as a failed start
            return
        watch.in_parent(pid)
        worker.pid, worker.watch, worker.started_at = pid, watch, monotonic()
        if watch.fd is not None:
            assert self.poller is not None  # made before any worker starts
            self.poller.register(watch.fd)

    # -- watching ------------------------------------------------------------
    def _reap(self) -> bool:
        """Collect the workers that ended and schedule their successors.
        True when one of them asked for the whole server to stop."""
        stop_all = False
        for worker in self.workers:
            if worker.pid is None:
                continue
            status = _exit_status(worker.pid)
            if status is _RUNNING:
                continue
            pid = worker.pid
            now = monotonic()
            self._forget_process(worker)
            if self.stopping:
                continue
            if status is not None and os.WIFEXITED(status) and (
                os.WEXITSTATUS(status) == SHUTDOWN_EXIT_STATUS
            ):
                stop_all = True
                continue
            worker.schedule_restart(now)
            self.server.worker_exited(pid, status)
        return stop_all

    def _forget_process(self, worker: _Worker) -> None:
        watch = worker.watch
        assert watch is not None and self.poller is not None  # a worker was started
        if watch.fd is not None:
            self.poller.unregister(watch.fd)
        watch.close()
        worker.pid = worker.watch = None

    # -- stopping ------------------------------------------------------------
    def _stop_workers(self) -> None:
        """SIGTERM to every worker (each finishes its request and exits),
        then SIGKILL to those still there after worker_stop_timeout; every
        one is reaped."""
        self.stopping = True
        deadline = monotonic() + self.server.worker_stop_timeout
        next_sigterm = 0.0
        waker = self.engine.waker
        poller = self.poller
        assert poller is not None  # the loop made it first
        try:
            while True:
                self._reap()
                running = [w for w in self.workers if w.pid is not None]
                now = monotonic()
                if not running or now >= deadline:
                    break
                if now >= next_sigterm:
                    # Repeated, in case code that a worker ran replaced its
                    # signal wake-up fd (see exits._watch_for_stop): the handler
                    # only sets a flag, so a repeat does no harm.
                    for worker in running:
                        assert worker.pid is not None and worker.watch is not None
                        worker.watch.send_signal(worker.pid, signal.SIGTERM)
                    next_sigterm = now + _SIGTERM_REPEAT_INTERVAL
                timeout = min(deadline, next_sigterm) - now
                if not all(w.watch is not None and w.watch.exact for w in running):
                    timeout = min(timeout, _RECHECK_INTERVAL_WHILE_STOPPING)
                if waker.fileno() in poller.wait(timeout):
                    waker.drain()  # another shutdown(): we are at it already
        finally:
            for worker in self.workers:  # past the deadline, or interrupted
                if worker.pid is not None:
                    assert worker.watch is not None  # set with pid
                    worker.watch.send_signal(worker.pid, signal.SIGKILL)
                    try:
                        os.waitpid(worker.pid, 0)
                    except ChildProcessError:
                        pass
                    self._forget_process(worker)

    def _close(self) -> None:
        """Close what the workers shared; server.socket is server_close()'s."""
        for listener in self.own_listeners:
            listener.close()
        self.own_listeners = []
        if self.shared_listener is not None and self.shared_listener.fileno() >= 0:
            self.shared_listener.settimeout(self.shared_listener_timeout)
        if self.lifeline is not None:
            for fd in self.lifeline:
                os.close(fd)
            self.lifeline = None
        if self.poller is not None:
            self.poller.close()

    # -- in a freshly forked worker -------------------------------------------
    def close_in_worker(self, keep: _Worker, keep_watch: _ExitWatch) -> None:
        """Drop what belongs to the supervisor and to the other workers:
        its poller and waker, their exit watches and listeners."""
        assert self.poller is not None  # forked from the running loop
        self.poller.close()
        self.engine.waker.close()  # this process's copy; the worker makes its own
        self.server.__dict__.pop("_fastserver_engine", None)
        keep_watch.in_worker()
        for worker in self.workers:
            if worker.watch is not None:
                worker.watch.close()
            if worker.listener is not keep.listener and worker.listener is not None:
                worker.listener.close()
        if self.lifeline is not None:
            os.close(self.lifeline[1])


_WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _signals_blocked(signals: Iterable[int]) -> Iterator[None]:
    """Block ``signals`` for the calling thread (its children inherit the
    mask) for the ``with`` body."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------------------
# A worker process
# ---------------------------------------------------------------------------
class _StopRequest:
    """Whether the worker was told to stop (SIGTERM, or its supervisor
    died).  A plain attribute, not a threading.Event: the signal handler
    runs between two bytecodes of the main thread, which may be holding
    the Event's lock at that moment."""

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False


def _serve_as_worker(supervisor: _Supervisor, worker: _Worker, watch: _ExitWatch) -> NoReturn:
    """The body of a worker process: serve ``worker.listener`` until told to
    stop, run server_close(), exit.  Never returns."""
    server = supervisor.server
    status = 1
    try:
        try:
            stop = _become_worker(supervisor, worker, watch)
            supervisor.serve_loop(supervisor.poll_interval)
            status = 0 if stop.requested else SHUTDOWN_EXIT_STATUS
        except SystemExit as exc:  # sys.exit() in a handler: this worker ends
            status = _exit_code(exc)
        except BaseException:
            traceback.print_exc()
        try:
            # What ThreadingMixIn and ThreadPoolMixIn need to finish the
            # requests their threads are running before the process ends.
            server.server_close()
        except BaseException:
            traceback.print_exc()
            status = status or 1
    finally:
        _flush_standard_streams()
        os._exit(status)


def _exit_code(system_exit: SystemExit) -> int:
    """The status a process ends with on this SystemExit, as Python decides it."""
    code = system_exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _become_worker(supervisor: _Supervisor, worker: _Worker, watch: _ExitWatch) -> _StopRequest:
    server = supervisor.server
    stop = _StopRequest()

    def request_stop(*_signal_args: object) -> None:
        stop.requested = True
        server._BaseServer__shutdown_request = True
        _engine.wake(server)

    signal.signal(signal.SIGTERM, request_stop)
    # Ctrl-C reaches the whole process group: the supervisor gets it and
    # stops the workers gracefully, with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if server._BaseServer__shutdown_request:
        stop.requested = True  # shutdown() raced with this fork: a stop like any other
    supervisor.close_in_worker(worker, watch)
    assert supervisor.lifeline is not None  # made before the first fork
    _watch_for_stop(supervisor.lifeline[0], request_stop)
    # Blocked by the supervisor across the fork (and so in the watch thread
    # for good); one that came meanwhile is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)
    server.__dict__.pop("_fastserver_supervisor", None)
    server.worker_index = worker.index
    if worker.listener is not None:
        server.socket = worker.listener
    return stop

