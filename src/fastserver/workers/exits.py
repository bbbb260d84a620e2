"""Knowing when a process ends, without polling.

The supervisor learns of a worker's death from an fd (a pidfd, or a pipe
only the worker holds) and reaps it with waitpid(); a worker learns that it
must stop from SIGTERM or from its supervisor's death (the lifeline pipe).
Kept apart from the supervisor so that its policy (when to restart, when to
stop) reads without the platform details of pidfds, pipes and signal
wake-up fds.
"""
from __future__ import annotations

import enum
import os
import selectors
import signal
import threading
from collections.abc import Callable
from typing import Final, Literal


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
