"""Module-wide locks that a forked child gets anew.

fastserver's modules keep a few locks for check-then-act steps that are
rare (making a server's engine or pool, counting a quiet error, starting
run_in_thread()'s pool).  A process may fork while another of its threads
holds one; in the child that thread does not exist, so nobody would ever
release it.  A ``ForkSafeLock`` is replaced by a new lock in every forked
child, before the child's code runs.

This module imports nothing else of fastserver's.
"""
from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType


class ForkSafeLock:
    """A ``threading.Lock`` that a forked child replaces with a new one.

    For module-level locks held for a moment, never per request: each use
    goes through this object to the lock of the current process.
    """

    __slots__ = ("_lock", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _every_lock.add(self)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> ForkSafeLock:
        self._lock.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()


_every_lock: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _renew_in_child() -> None:
    # One thread runs in the child: nothing else touches these now.
    for lock in list(_every_lock):
        lock._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_in_child)
