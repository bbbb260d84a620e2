"""The pure-Python twin of the compiled core (``src/_core.pyx``).

Same interface, same behaviour, built on :mod:`selectors`; used on
Windows, where there is no compiled core, and wherever
``FASTSERVER_NO_EXTENSIONS=1`` asks for it (at install time on a machine
without a C compiler, whose install fails otherwise: setup.py).  The test suite runs every
behaviour against both.  The contract they share (the plan, the status
codes, the constants) is ``_contract``; the pieces have the same names in
both (``Waker``, ``Poller``, ``AcceptGate``, ``serve_forever``), so the
two loops read side by side.  A change of behaviour here is a change there.
"""
from __future__ import annotations

import os
import select
import selectors
import socket
import threading
from time import monotonic
from typing import TYPE_CHECKING

from ._contract import (
    BACK_OFF,
    BACKOFF_MAX,
    BACKOFF_MIN,
    CALL_EVERY_HOOK,
    DRAIN_BATCH,
    HANDLED,
    Plan,
    status_of_errno,
)

if TYPE_CHECKING:
    from ._contract import LoopState, Server
    from .connections import OpenConnections

__all__ = ["DRAIN_BATCH", "Waker", "Poller", "choose_backend", "native_backend",
           "wait_readable", "AcceptGate", "serve_forever", "handle_request_noblock"]

_SELECTORS: dict[str, type[selectors.BaseSelector] | None] = {
    "epoll": getattr(selectors, "EpollSelector", None),
    "kqueue": getattr(selectors, "KqueueSelector", None),
    "poll": getattr(selectors, "PollSelector", None),
    "select": selectors.SelectSelector,
}


def native_backend() -> str:
    """The best poller this platform has."""
    for name in ("epoll", "kqueue", "poll", "select"):
        if _SELECTORS[name] is not None:
            return name
    raise AssertionError("unreachable: select() always exists")


def choose_backend(backend: str | None = None) -> str:
    """``backend``, else ``$FASTSERVER_POLLER``, else the native one."""
    name = backend or os.environ.get("FASTSERVER_POLLER") or native_backend()
    if name not in _SELECTORS:
        raise ValueError(
            f"unknown poller backend {name!r}: choose one of "
            f"{', '.join(sorted(_SELECTORS))}"
        )
    if _SELECTORS[name] is None:
        raise ValueError(f"poller backend {name!r} is not available on this platform")
    return name


class Waker:
    """A self-pipe: ``wake()`` makes the read end readable.

    ``wake()`` and ``close()`` hold the waker's lock, as the compiled
    core's do: once closed, the fd number may belong to someone else (the
    next pipe or socket opened), and a wake() that had read it just before
    must not write there.  The write never blocks, so the lock is held for
    a moment only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reader: socket.socket | None
        # Windows has os.pipe(), but its select() takes sockets only.
        if os.name == "posix":
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
            self._reader = None
        else:  # Windows: select() takes sockets only
            self._reader, writer = socket.socketpair()
            self._reader.setblocking(False)
            writer.setblocking(False)
            self._writer = writer
            self._read_fd = self._reader.fileno()
            self._write_fd = writer.fileno()

    def fileno(self) -> int:
        return self._read_fd

    def wake(self) -> None:
        with self._lock:
            fd = self._write_fd
            if fd < 0:
                return
            try:
                if self._reader is None:
                    os.write(fd, b"\0")
                else:
                    self._writer.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # already full of wake-ups: the reader will see one
            except OSError:
                pass  # closed by another thread's server_close(): nothing to wake

    def drain(self) -> None:
        fd = self._read_fd
        if fd < 0:
            return
        try:
            while True:
                data = os.read(fd, 4096) if self._reader is None else self._reader.recv(4096)
                if len(data) < 4096:
                    return
        except (BlockingIOError, InterruptedError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            read_fd, write_fd = self._read_fd, self._write_fd
            self._read_fd = self._write_fd = -1
            if read_fd < 0:
                return
            if self._reader is None:
                os.close(read_fd)
                os.close(write_fd)
            else:
                self._reader.close()
                self._writer.close()


class Poller:
    """Readiness of a few fds, for reading."""

    def __init__(self, backend: str | None = None) -> None:
        self.backend = choose_backend(backend)
        selector_class = _SELECTORS[self.backend]
        assert selector_class is not None  # choose_backend() checked it
        self._selector = selector_class()

    def register(self, fd: int) -> None:
        self._selector.register(fd, selectors.EVENT_READ)

    def unregister(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def wait(self, timeout: float | None) -> list[int]:
        """Ready fds; ``timeout`` None waits forever.  EINTR is retried by
        :mod:`selectors` (PEP 475) after running signal handlers."""
        if timeout is not None and timeout < 0:
            timeout = 0
        return [key.fd for key, _ in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Wait for one fd: True when readable (or in error), False on timeout."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return bool(poller.poll(ms))
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable)


def handle_request_noblock(server: Server, plan: Plan = CALL_EVERY_HOOK,
                           connections: OpenConnections | None = None) -> int:
    """The stdlib's ``BaseServer._handle_request_noblock`` chain.

    Returns HANDLED, or what a failed ``get_request()`` says of the listener
    (``_contract.status_of_errno``).  When the plan refuses at
    max_connections and ``connections`` is over it, the connection goes to
    ``handle_overload()`` instead of the chain.
    """
    try:
        request, client_address = server.get_request()
    except OSError as exc:
        return status_of_errno(exc.errno)
    if (plan.refuse_overload and connections is not None
            and len(connections) > plan.max_connections):
        connections.discard(request)
        server.handle_overload(request, client_address)
        return HANDLED
    if server.verify_request(request, client_address):
        try:
            server.process_request(request, client_address)
        except Exception:
            server.handle_error(request, client_address)
            server.shutdown_request(request)
        except BaseException:
            server.shutdown_request(request)
            raise
    else:
        server.shutdown_request(request)
    return HANDLED


def _shutdown_requested(server: Server) -> bool:
    # Read every time, not cached: code in the wild stops the loop from a
    # handler with ``server._BaseServer__shutdown_request = True``.
    return server._BaseServer__shutdown_request


class AcceptGate:
    """Whether the loop polls the listener, and why not when it does not.

    Open while accepting.  It closes for three reasons: *backing off* after
    EMFILE/ENFILE/ENOBUFS/ENOMEM (the listener stays readable, so retrying
    at once would spin), *waiting for room* at max_connections with
    overload "wait" (new clients wait in the kernel's backlog; the next
    close wakes the loop), and *listener gone* (closed under the loop: only
    shutdown() is left to wait for).
    """

    def __init__(self, poller: Poller, listen_fd: int, plan: Plan,
                 connections: OpenConnections | None) -> None:
        self.poller = poller
        self.listen_fd = listen_fd
        self.connections = connections if plan.wait_for_room else None
        self.max_connections = plan.max_connections
        self.listening = True
        self.waiting_for_room = False
        self.listener_gone = False
        self.backoff = 0.0  # the current pause after EMFILE & co, 0 while accepting
        self.resume_at = 0.0
        poller.register(listen_fd)

    def wait_timeout(self, interval: float | None) -> float | None:
        """The poll timeout: ``interval``, shortened to the end of a pause."""
        if self.listening or self.listener_gone or self.waiting_for_room:
            return interval
        pause_left = max(0.0, self.resume_at - monotonic())
        return pause_left if interval is None else min(interval, pause_left)

    def reopen_if_due(self) -> bool:
        """After a wake-up: open again when there is room or the pause is
        over.  True when it did (the clients are waiting: try at once)."""
        if self.listening or self.listener_gone:
            return False
        if self.waiting_for_room:
            assert self.connections is not None  # full() closed the gate
            if len(self.connections) >= self.max_connections:
                return False
            self.connections.stop_waiting()
            self.waiting_for_room = False
        elif monotonic() < self.resume_at:
            return False
        self._open()
        return True

    def full(self) -> bool:
        """At max_connections with overload "wait"?  Then close, waiting for
        room: the registry says so to the closers and looks again under its
        lock, so a connection closed in between is never missed."""
        connections = self.connections
        if connections is None or len(connections) < self.max_connections:
            return False
        if not connections.wait_for_room(self.max_connections):
            return False
        self.waiting_for_room = True
        self._close()
        return True

    def taken(self, status: int) -> bool:
        """After taking a request: False when ``status`` closed the gate."""
        if status == HANDLED:
            self.backoff = 0.0
            return True
        if status == BACK_OFF:
            self.backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self.backoff * 2))
            self.resume_at = monotonic() + self.backoff
        else:  # closed: wait for the waker alone until shutdown()
            self.listener_gone = True
        self._close()
        return False

    def release(self) -> None:
        """The loop ends: nobody waits for room any more."""
        if self.waiting_for_room and self.connections is not None:
            self.connections.stop_waiting()

    def _open(self) -> None:
        self.poller.register(self.listen_fd)
        self.listening = True

    def _close(self) -> None:
        self.poller.unregister(self.listen_fd)
        self.listening = False


def serve_forever(server: Server, poll_interval: float | None, plan: Plan,
                  state: LoopState) -> None:
    """Serve until ``server.shutdown()``: the loop of ``BaseServer.serve_forever``.

    Each wake-up drains up to DRAIN_BATCH ready requests before waiting
    again.  ``service_actions()`` runs after every request and after every
    wake-up without one, as in the stdlib (where each select() returns once
    per request).  The twin takes one datagram per get_request(), so it
    never leaves any over for ``state.leftover_datagrams``.
    """
    listen_fd = server.fileno()
    waker = state.waker
    wake_fd = waker.fileno()
    handle_one = plan.handle_one
    connections = state.connections
    service_actions = None if plan.service_actions_default else server.service_actions
    poller = Poller()
    try:
        poller.register(wake_fd)
        gate = AcceptGate(poller, listen_fd, plan, connections)
        waker.drain()  # a shutdown() of an earlier loop may have left a wake-up
        try:
            while not _shutdown_requested(server):
                ready = poller.wait(gate.wait_timeout(poll_interval))
                if _shutdown_requested(server):
                    break
                if wake_fd in ready:
                    waker.drain()
                listener_ready = gate.listening and listen_fd in ready
                if gate.reopen_if_due():
                    listener_ready = True
                if not listener_ready:
                    if service_actions is not None:
                        service_actions()  # a timeout or a wake-up
                    continue
                for handled in range(1, DRAIN_BATCH + 1):
                    if gate.full():
                        if handled == 1 and service_actions is not None:
                            service_actions()
                        break
                    if handle_one is None:
                        status = handle_request_noblock(server, plan, connections)
                    else:
                        handle_one()
                        status = HANDLED
                    # After every request, as the stdlib's loop does after every
                    # select(): ForkingMixIn's max_children relies on it.
                    if service_actions is not None:
                        service_actions()
                    if not gate.taken(status):
                        break
                    if _shutdown_requested(server) or not wait_readable(listen_fd, 0):
                        break
        finally:
            gate.release()
    finally:
        poller.close()
