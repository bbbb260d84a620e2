"""The connections a stream server has open, for its limits and its drain.

A connection counts from the moment it is accepted (``TCPServer.get_request``
or the core's own accept) until ``TCPServer.close_request`` (or the core's
own close) lets it go.  ``max_connections`` caps that number and
``shutdown(timeout=...)`` waits for it to reach zero.  A server whose
overrides bypass those two methods simply does not count those connections.

One registry per server and per process (it lives in the server's engine):
a forked child counts its own.
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

    __slots__ = ("sockets", "prune_at", "waiting_for_room", "_wake_loop", "_emptied")

    #: Below this size the set is never pruned (see ``prune``).
    PRUNE_MIN = 1024

    def __init__(self, wake_loop: Callable[[], None]) -> None:
        self.sockets: set[socket.socket] = set()
        self.prune_at = self.PRUNE_MIN
        # Set by the loop when it stopped accepting at max_connections; a
        # close then wakes it.  Read without a lock: the loop sets it before
        # re-checking the count, and a closer discards before reading it.
        self.waiting_for_room = False
        self._wake_loop = wake_loop
        self._emptied: threading.Event | None = None  # while drain() waits

    def __len__(self) -> int:
        return len(self.sockets)

    def add(self, sock: socket.socket) -> None:
        sockets = self.sockets
        sockets.add(sock)
        if len(sockets) >= self.prune_at:
            self.prune()

    def discard(self, sock: object) -> None:
        self.sockets.discard(sock)
        if self.waiting_for_room:
            self._wake_loop()
        emptied = self._emptied
        if emptied is not None and not self.sockets:
            emptied.set()

    def prune(self) -> int:
        """Forget sockets already closed elsewhere.

        A server that overrides shutdown_request/close_request to hand the
        connection to other code (and close it there) never tells us; the set
        must not keep those objects alive forever.  Pruning when the set has
        doubled since the last time keeps the cost amortised O(1).  Returns
        the size at which to prune next (the core keeps it).
        """
        self.sockets.difference_update([s for s in self.sockets if s.fileno() < 0])
        self.prune_at = max(self.PRUNE_MIN, 2 * len(self.sockets))
        return self.prune_at

    def wait_until_empty(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for every connection to close."""
        emptied = self._emptied = threading.Event()
        try:
            if not self.sockets:
                return True
            return emptied.wait(timeout)
        finally:
            self._emptied = None

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
