"""The connections a stream server has open, for its limits and its drain.

A connection counts from the moment it is accepted (``TCPServer.get_request``
or the core's own accept) until ``TCPServer.close_request`` (or the core's
own close) lets it go.  ``max_connections`` caps that number and
``shutdown(timeout=...)`` waits for it to reach zero.  A server whose
overrides bypass those two methods simply does not count those connections.

One registry per server and per process (it lives in the server's engine):
a forked child counts its own.

Threads meet here: the loop adds, handler threads discard, ``drain()`` waits.
Each operation on the set is atomic (with or without the GIL); the two
hand-offs that pair a flag with the set's size (the loop waiting for room,
``drain()`` waiting for the set to empty) take ``_lock`` on both sides, so
that without the GIL neither side can miss the other's last change.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class OpenConnections:
    """The set of a server's open stream connections.

    The core adds and discards sockets directly on ``sockets`` (a plain
    set); everything that needs to wake somebody goes through the methods.
    """

    __slots__ = ("sockets", "prune_at", "waiting_for_room", "_wake_loop", "_drainers", "_lock")

    #: Below this size the set is never pruned (see ``prune``).
    PRUNE_MIN = 1024

    def __init__(self, wake_loop: Callable[[], None]) -> None:
        self.sockets: set[socket.socket] = set()
        self.prune_at = self.PRUNE_MIN
        # Set by the loop when it stopped accepting at max_connections
        # (wait_for_room()); a close then wakes it.
        self.waiting_for_room = False
        self._wake_loop = wake_loop
        # One event per drain() waiting: several may wait at once (threads
        # calling shutdown(timeout=...) or drain() together), and each must
        # be woken by the close that empties the set.
        self._drainers: list[threading.Event] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.sockets)

    def add(self, sock: socket.socket) -> None:
        sockets = self.sockets
        sockets.add(sock)
        if len(sockets) >= self.prune_at:
            self.prune()

    def discard(self, sock: object) -> None:
        self.sockets.discard(sock)
        with self._lock:
            if self.waiting_for_room:
                self._wake_loop()
            if self._drainers and not self.sockets:
                for emptied in self._drainers:
                    emptied.set()

    def wait_for_room(self, max_connections: int) -> bool:
        """The loop's side: True, and the next close wakes the loop, when
        ``max_connections`` are open; False when there is room after all."""
        with self._lock:
            if len(self.sockets) < max_connections:
                return False
            self.waiting_for_room = True
            return True

    def stop_waiting(self) -> None:
        """The loop accepts again (or ends): closes need not wake it."""
        with self._lock:
            self.waiting_for_room = False

    def prune(self) -> int:
        """Forget sockets already closed elsewhere.

        A server that overrides shutdown_request/close_request to hand the
        connection to other code (and close it there) never tells us; the set
        must not keep those objects alive forever.  Pruning when the set has
        doubled since the last time keeps the cost amortised O(1).  Returns
        the size at which to prune next (the core keeps it).
        """
        # A snapshot first: handler threads discard while we look.
        self.sockets.difference_update([s for s in list(self.sockets) if s.fileno() < 0])
        self.prune_at = max(self.PRUNE_MIN, 2 * len(self.sockets))
        return self.prune_at

    def wait_until_empty(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for every connection to close."""
        emptied = threading.Event()
        with self._lock:
            if not self.sockets:
                return True
            self._drainers.append(emptied)
        try:
            return emptied.wait(timeout)
        finally:
            with self._lock:
                self._drainers.remove(emptied)

    def cut(self) -> int:
        """Shut every open connection down (both directions), so a handler
        blocked on it sees EOF or an error and finishes.  The handler's own
        code still closes it.  Returns how many were cut."""
        cut = 0
        for sock in list(self.sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
                cut += 1
            except OSError:
                pass  # closed or reset meanwhile
        return cut
