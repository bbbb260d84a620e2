"""PreforkMixIn: bind once, serve from N worker processes, supervised.

    class Server(PreforkMixIn, TCPServer):
        workers = 4

The constructor binds in the calling process, as usual.  ``serve_forever()``
there becomes a supervisor: it forks ``workers`` children that each run the
ordinary serve loop, starts a new worker when one dies (waiting longer each
time a worker dies right after its start, so a crashing worker cannot make
it fork in a loop), and stops them all on ``shutdown()``, ``server_close()``
or SIGTERM.  A worker never returns into the caller's code: it ends with
``os._exit()``.

Listeners.  On Linux, for TCP and UDP over IPv4 and IPv6, every worker serves
its own SO_REUSEPORT socket bound to the server's address, so the kernel
spreads connections over the workers and wakes only the one it chose.  The
supervisor holds all of them open, so connections queued for a worker that
crashes wait in its socket's backlog for its successor instead of being
reset.  Elsewhere (Unix sockets, other systems, ``reuse_port = False``) the
workers share ``server.socket``, made non-blocking so that a worker that
loses the race for a connection gets EAGAIN instead of blocking.
"""
from __future__ import annotations

import contextlib
import enum
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Final, Literal, NoReturn

from . import _engine
from .servers import TCPServer, UDPServer

if TYPE_CHECKING:
    from ._contract import Poller
    from .servers import BaseServer

    # The mix-in goes before a server class in the bases: for the type
    # checker it is a (socket) server.
    _ServerMixIn = TCPServer
else:
    _ServerMixIn = object

__all__: list[str] = []

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
# _ExitWatch), the supervisor checks its workers at least this often.
_RECHECK_INTERVAL = 1.0
_RECHECK_INTERVAL_WHILE_STOPPING = 0.05
# While stopping, SIGTERM is sent again this often (see _stop_workers).
_SIGTERM_REPEAT_INTERVAL = 0.2

_REUSE_PORT_BALANCES = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
_INET_FAMILIES = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))


def usable_cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where known)."""
    if hasattr(os, "process_cpu_count"):  # 3.13
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def describe_exit(status: int | None) -> str:
    """``os.waitpid()``'s status in words (None: reaped by someone else)."""
    if status is None:
        return "ended (reaped elsewhere: status unknown)"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "signal %d" % number
        return "was killed by %s" % name
    return "exited with status %d" % os.WEXITSTATUS(status)


# ---------------------------------------------------------------------------
# Knowing when a worker dies, without polling
# ---------------------------------------------------------------------------
_pidfds_work: bool | None = None


def _pidfds_available() -> bool:
    """Can this kernel give out pidfds (Linux 5.3+, Python 3.9+)?"""
    global _pidfds_work
    if _pidfds_work is None:
        _pidfds_work = False
        if hasattr(os, "pidfd_open"):
            try:
                os.close(os.pidfd_open(os.getpid()))
                _pidfds_work = True
            except OSError:
                pass
    return _pidfds_work


class _ExitWatch:
    """An fd that becomes readable when one worker process ends.

    A pidfd where the kernel has them.  Elsewhere the read end of a pipe
    whose write end only the worker holds: it reads EOF once the last copy
    closes, which is at the worker's exit unless the worker forked children
    that kept it (ForkingMixIn), so the supervisor also looks at every worker
    with waitpid() at each wake-up and does not wait for long (``exact`` is
    false then).
    """

    __slots__ = ("fd", "exact", "_write_end")

    def __init__(self) -> None:
        """Made before the fork (the pipe must exist in both processes)."""
        self.fd: int | None = None
        self._write_end: int | None = None
        self.exact = _pidfds_available()
        if not self.exact:
            # os.pipe() fds are not inherited by exec(): a program the
            # worker runs does not hold the write end.
            self.fd, self._write_end = os.pipe()

    def in_parent(self, pid: int) -> None:
        if self.exact:
            try:
                self.fd = os.pidfd_open(pid)
            except OSError:  # out of fds: the waitpid() checks still find it
                self.exact = False
        else:
            assert self._write_end is not None  # made in __init__ without pidfds
            os.close(self._write_end)
            self._write_end = None

    def in_worker(self) -> None:
        """The worker keeps the write end (open until it exits)."""
        if not self.exact:
            assert self.fd is not None  # the pipe's read end
            os.close(self.fd)
            self.fd = None

    def send_signal(self, pid: int, signum: int) -> None:
        """Signal the worker; through its pidfd where there is one, so that a
        pid reaped behind our back and reused is never hit."""
        try:
            if self.exact and self.fd is not None and hasattr(signal, "pidfd_send_signal"):
                signal.pidfd_send_signal(self.fd, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass  # already gone

    def close(self) -> None:
        for fd in (self.fd, self._write_end):
            if fd is not None:
                os.close(fd)
        self.fd = self._write_end = None


class _Running(enum.Enum):
    RUNNING = "running"


_RUNNING: Final = _Running.RUNNING


def _exit_status(pid: int) -> int | Literal[_Running.RUNNING] | None:
    """The worker's waitpid() status once it has ended (the process is then
    reaped), ``_RUNNING`` while it runs, None if someone else reaped it
    (SIGCHLD ignored, or a waitpid(-1) elsewhere in the program)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if done else _RUNNING


# ---------------------------------------------------------------------------
# Telling a worker to stop: SIGTERM, or its supervisor's death
# ---------------------------------------------------------------------------
def _watch_for_stop(lifeline: int, stop: Callable[[], object]) -> None:
    """In a worker: a daemon thread calls ``stop`` when SIGTERM arrives or
    when the supervisor is gone, however it died (the lifeline pipe, whose
    write end only the supervisor holds, reads EOF).

    SIGTERM is seen through signal.set_wakeup_fd(), which the C-level
    handler writes to in whatever thread the kernel picked, rather than
    through the Python-level handler alone: that one runs only once the
    main thread gets to it, so a signal delivered to another thread, or
    while the loop runs C code, would wait for the loop's next wake-up
    (poll_interval; never with None).  CPython 3.13.0 even skips it in a
    process forked from a thread other than the main one until something
    checks for signals explicitly.  And a thread rather than Linux's
    PR_SET_PDEATHSIG for the supervisor's death: it works on every POSIX
    system, and wakes the loop through its waker at once.
    """
    signal_read, signal_write = os.pipe()
    os.set_blocking(signal_read, False)
    os.set_blocking(signal_write, False)
    signal.set_wakeup_fd(signal_write, warn_on_full_buffer=False)

    def watch() -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(lifeline, selectors.EVENT_READ)
            selector.register(signal_read, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fd == lifeline or signal.SIGTERM in _read_available(signal_read):
                        stop()
                        return

    threading.Thread(target=watch, name="fastserver stop watch", daemon=True).start()


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 512)
    except (BlockingIOError, InterruptedError):
        return b""


# ---------------------------------------------------------------------------
# The listeners
# ---------------------------------------------------------------------------
def _wants_reuse_port(server: PreforkMixIn) -> bool:
    """Should each worker get its own SO_REUSEPORT socket?  Linux balances
    connections over such sockets; other systems' SO_REUSEPORT does not."""
    return (
        bool(server.reuse_port)
        and _REUSE_PORT_BALANCES
        and getattr(server, "address_family", None) in _INET_FAMILIES
    )


def _sibling_listener(server: PreforkMixIn, listener: socket.socket) -> socket.socket:
    """Another socket in ``listener``'s SO_REUSEPORT group: same family,
    type and address, listening with the same backlog."""
    sibling = socket.socket(listener.family, listener.type, listener.proto)
    try:
        if server.allow_reuse_address:
            sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listener.family == getattr(socket, "AF_INET6", None):
            # Dual-stack or not, as server_bind() made the first one.
            v6only = listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            sibling.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sibling.bind(listener.getsockname())
        if listener.type == socket.SOCK_STREAM:
            sibling.listen(server.request_queue_size)
        sibling.settimeout(listener.gettimeout())
    except BaseException:
        sibling.close()
        raise
    return sibling


def _reuse_port_listeners(server: PreforkMixIn, count: int) -> list[socket.socket] | None:
    """``server.socket`` and count - 1 siblings, or None when the socket
    cannot have any (it was bound without SO_REUSEPORT, or it is not a plain
    socket: siblings would lack what was done to it, e.g. TLS)."""
    listener: socket.socket | None = getattr(server, "socket", None)
    if (
        listener is None
        or type(listener) is not socket.socket
        or listener.family not in _INET_FAMILIES
    ):
        return None
    try:
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            return None
    except OSError:
        return None
    siblings: list[socket.socket] = []
    try:
        for _ in range(count - 1):
            siblings.append(_sibling_listener(server, listener))
    except OSError:
        for sibling in siblings:
            sibling.close()
        return None  # the workers share server.socket instead
    return [listener] + siblings


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

    def __init__(self, server: PreforkMixIn, poll_interval: float | None) -> None:
        self.server = server
        self.poll_interval = poll_interval
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
        count = server.workers
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("workers must be an int >= 1, not %r" % (count,))
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
                    # signal wake-up fd (see _watch_for_stop): the handler
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
            super(PreforkMixIn, server).serve_forever(supervisor.poll_interval)
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


# ---------------------------------------------------------------------------
# The mix-in
# ---------------------------------------------------------------------------
@contextlib.contextmanager
def _sigterm_requests_shutdown(server: BaseServer) -> Iterator[None]:
    """While the supervisor runs in the main thread, SIGTERM does what
    shutdown() does, unless the program has its own SIGTERM handling."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    ):
        yield
        return

    def request_shutdown(*_signal_args: object) -> None:
        server._BaseServer__shutdown_request = True
        _engine.wake(server)

    previous = signal.signal(signal.SIGTERM, request_shutdown)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if hasattr(os, "fork"):

    class PreforkMixIn(_ServerMixIn):
        """Mix-in class to serve from ``workers`` processes, supervised.

        ``serve_forever()`` forks the workers, each running the usual loop
        on its own SO_REUSEPORT listener (Linux, TCP/UDP) or on the shared
        ``server.socket``, restarts a worker that dies, and returns after
        ``shutdown()`` (or SIGTERM, or ``server_close()``) once every worker
        has finished its request and exited.  Each worker calls
        ``server_close()`` before it exits; ``handle_request()`` serves in
        the calling process, as usual.
        """

        #: Worker processes: by default one per CPU this process may use.
        workers = usable_cpu_count()
        #: On Linux, give each TCP/UDP worker its own SO_REUSEPORT socket
        #: (server_bind() sets the option on server.socket).  False: every
        #: worker accepts on server.socket.
        reuse_port = True
        #: Seconds a stopping worker gets to finish its request before
        #: SIGKILL.
        worker_stop_timeout = 10.0
        #: None in the supervisor; 0 .. workers - 1 in a worker process.
        worker_index: int | None = None

        _fastserver_supervisor: _Supervisor | None = None

        def server_bind(self) -> None:
            """Set SO_REUSEPORT when each worker gets its own socket, then
            bind as the server class does."""
            if _wants_reuse_port(self):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()

        def serve_forever(self, poll_interval: float | None = 0.5) -> None:
            """Start the workers and supervise them until shutdown().

            Each worker runs the server class's serve_forever(poll_interval).
            Returns once every worker has exited.
            """
            if self._running_supervisor() is not None:
                raise RuntimeError("serve_forever() is already running")
            self._BaseServer__is_shut_down.clear()
            supervisor = self._fastserver_supervisor = _Supervisor(self, poll_interval)
            try:
                with _sigterm_requests_shutdown(self):
                    supervisor.run()
            finally:
                self._fastserver_supervisor = None
                self._BaseServer__shutdown_request = False
                self._BaseServer__is_shut_down.set()

        def server_close(self) -> None:
            """Stop the workers if serve_forever() still runs, then close."""
            supervisor = self._running_supervisor()
            if supervisor is not None:
                self._BaseServer__shutdown_request = True
                _engine.wake(self)
                if supervisor.thread_id != threading.get_ident():
                    self._BaseServer__is_shut_down.wait()
                # else: called by a signal handler inside the supervisor's
                # own loop, which stops the workers as soon as it resumes.
            super().server_close()

        def worker_exited(self, pid: int, status: int | None) -> None:
            """Called in the supervisor when a worker ends without being
            asked to; ``status`` is os.waitpid()'s (None if it was reaped
            elsewhere).  A new worker is started after this returns.  The
            default prints a line on stderr.
            """
            print(
                "fastserver: worker %d %s; starting another"
                % (pid, describe_exit(status)),
                file=sys.stderr,
            )

        @property
        def worker_pids(self) -> list[int]:
            """The pids of the running workers (in the supervisor)."""
            supervisor = self._running_supervisor()
            if supervisor is None:
                return []
            return [w.pid for w in supervisor.workers if w.pid is not None]

        def _running_supervisor(self) -> _Supervisor | None:
            supervisor = self._fastserver_supervisor
            if supervisor is None or supervisor.pid != os.getpid():
                return None
            return supervisor

    class PreforkTCPServer(PreforkMixIn, TCPServer):
        pass

    class PreforkUDPServer(PreforkMixIn, UDPServer):
        pass

    __all__ += ["PreforkMixIn", "PreforkTCPServer", "PreforkUDPServer"]

    if hasattr(socket, "AF_UNIX"):
        from .servers import UnixDatagramServer, UnixStreamServer

        class PreforkUnixStreamServer(PreforkMixIn, UnixStreamServer):
            pass

        class PreforkUnixDatagramServer(PreforkMixIn, UnixDatagramServer):
            pass

        __all__ += ["PreforkUnixStreamServer", "PreforkUnixDatagramServer"]
