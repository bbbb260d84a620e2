"""PreforkMixIn and the predefined Prefork*Server classes.

    class Server(PreforkMixIn, TCPServer):
        workers = 4

What the user sees: the settings, the ``worker_exited()`` hook, and the
server methods that hand serve_forever() over to the supervisor
(supervisor.py) and stop it.  Kept apart so that the public class reads on
its own.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from .. import _engine
from ..servers import TCPServer, UDPServer
from .exits import describe_exit
from .listeners import _wants_reuse_port
from .supervisor import _Supervisor

if TYPE_CHECKING:
    from ..servers import BaseServer
    from .supervisor import PreforkServer

    # The mix-in goes before a server class in the bases: for the type
    # checker it is a (socket) server, with the settings the supervisor
    # reads.
    _ServerMixIn = PreforkServer
else:
    _ServerMixIn = object

__all__: list[str] = []


def usable_cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where known)."""
    if hasattr(os, "process_cpu_count"):  # 3.13
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


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

        #: The settings (fastserver/_settings.py): checked by the server
        #: classes when a class is defined and a server constructed, and a
        #: keyword argument of their constructors.
        _fastserver_settings: ClassVar[tuple[str, ...]] = ("workers",)

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
            supervisor = self._fastserver_supervisor = _Supervisor(
                self, poll_interval, super().serve_forever
            )
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
        from ..servers import UnixDatagramServer, UnixStreamServer

        class PreforkUnixStreamServer(PreforkMixIn, UnixStreamServer):
            pass

        class PreforkUnixDatagramServer(PreforkMixIn, UnixDatagramServer):
            pass

        __all__ += ["PreforkUnixStreamServer", "PreforkUnixDatagramServer"]
