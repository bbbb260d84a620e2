"""Concurrency mix-ins: the stdlib's ThreadingMixIn and ForkingMixIn.

They override ``process_request`` (and a few hooks), so the core's loop
calls them like any other user override.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socketserver

    from ._typing import RequestType, RetAddress

    # The mix-ins call the server's hooks, and go before a server class in
    # the bases: for the type checker they are servers, the stdlib's kind,
    # since they work on any (fastserver's servers are such, to mypy).
    _ServerMixIn = socketserver.BaseServer
else:
    _ServerMixIn = object

if hasattr(os, "fork"):

    class ForkingMixIn(_ServerMixIn):
        """Mix-in class to handle each request in a new process."""

        timeout: float | None = 300
        active_children: set[int] | None = None
        max_children = 40
        # If true, server_close() waits until all child processes complete.
        block_on_close = True

        def collect_children(self, *, blocking: bool = False) -> None:
            """Internal routine to wait for children that have exited."""
            if self.active_children is None:
                return

            # If we're above the max number of children, wait and reap them
            # until we go back below threshold.  Note that we use waitpid(-1)
            # below to be able to collect children in size(<defunct children>)
            # calls instead of size(<children>): the downside is that this
            # might reap children which we didn't spawn, which is why we only
            # resort to this when we're above max_children.
            while len(self.active_children) >= self.max_children:
                try:
                    pid, _ = os.waitpid(-1, 0)
                    self.active_children.discard(pid)
                except ChildProcessError:
                    # we don't have any children, we're done
                    self.active_children.clear()
                except OSError:
                    break

            # Now reap all defunct children.
            for pid in self.active_children.copy():
                try:
                    flags = 0 if blocking else os.WNOHANG
                    pid, _ = os.waitpid(pid, flags)
                    # if the child hasn't exited yet, pid will be 0 and ignored
                    # by discard() below
                    self.active_children.discard(pid)
                except ChildProcessError:
                    # someone else reaped it
                    self.active_children.discard(pid)
                except OSError:
                    pass

        def handle_timeout(self) -> None:
            """Wait for zombies after self.timeout seconds of inactivity.

            May be extended, do not override.
            """
            self.collect_children()

        def service_actions(self) -> None:
            """Collect the zombie child processes regularly in the ForkingMixIn.

            service_actions is called in the BaseServer's serve_forever loop.
            """
            self.collect_children()

        def process_request(self, request: RequestType, client_address: RetAddress) -> None:
            """Fork a new subprocess to process the request."""
            pid = os.fork()
            if pid:
                # Parent process
                if self.active_children is None:
                    self.active_children = set()
                self.active_children.add(pid)
                self.close_request(request)
                return
            else:
                # Child process.
                # This must never return, hence os._exit()!
                status = 1
                try:
                    self.finish_request(request, client_address)
                    status = 0
                except Exception:
                    self.handle_error(request, client_address)
                finally:
                    try:
                        self.shutdown_request(request)
                    finally:
                        os._exit(status)

        def server_close(self) -> None:
            super().server_close()
            self.collect_children(blocking=self.block_on_close)


class _Threads(list[threading.Thread]):
    """Joinable list of all non-daemon threads."""

    def append(self, thread: threading.Thread) -> None:
        self.reap()
        if thread.daemon:
            return
        super().append(thread)

    def pop_all(self) -> list[threading.Thread]:
        self[:], result = [], self[:]
        return result

    def join(self) -> None:
        for thread in self.pop_all():
            thread.join()

    def reap(self) -> None:
        self[:] = (thread for thread in self if thread.is_alive())


class _NoThreads:
    """Degenerate version of _Threads."""

    def append(self, thread: threading.Thread) -> None:
        pass

    def join(self) -> None:
        pass


class ThreadingMixIn(_ServerMixIn):
    """Mix-in class to handle each request in a new thread."""

    # Decides how threads will act upon termination of the
    # main process
    daemon_threads = False
    # If true, server_close() waits until all non-daemonic threads terminate.
    block_on_close = True
    # Threads object
    # used by server_close() to wait for all threads completion.
    _threads: _Threads | _NoThreads = _NoThreads()

    # self is any server, not only a ThreadingMixIn: ThreadPoolMixIn (pool.py)
    # serves its requests with this same method.
    def process_request_thread(
        self: socketserver.BaseServer, request: RequestType, client_address: RetAddress
    ) -> None:
        """Same as in BaseServer but as a thread.

        In addition, exception handling is done here.
        """
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request: RequestType, client_address: RetAddress) -> None:
        """Start a new thread to process the request."""
        if self.block_on_close:
            vars(self).setdefault("_threads", _Threads())
        t = threading.Thread(
            target=self.process_request_thread, args=(request, client_address)
        )
        t.daemon = self.daemon_threads
        self._threads.append(t)
        t.start()

    def server_close(self) -> None:
        super().server_close()
        self._threads.join()
