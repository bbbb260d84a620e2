"""The pure-Python twin of the compiled core (``src/_core.pyx``).

Same interface, same behaviour, built on :mod:`selectors`; used where the
extension could not be built (no compiler, Windows) or when
``FASTSERVER_NO_EXTENSIONS=1`` asks for it.  The test suite runs against
both.  Keep the two in step: a change of behaviour here is a change there.
"""
from __future__ import annotations

import errno
import io
import os
import select
import selectors
import socket
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from ._typing import Datagram
    from .connections import OpenConnections
    from .servers import BaseServer

#: Requests handled per readiness before the loop waits again.
DRAIN_BATCH = 64

#: errno values of get_request() that mean "out of a resource, not the
#: client's fault": the listener stays readable, so retrying at once would
#: spin.  The loop pauses accepting instead, for BACKOFF_MIN doubling to
#: BACKOFF_MAX seconds, until an accept succeeds.
RESOURCE_ERRNOS = frozenset(
    code
    for code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
)
BACKOFF_MIN = 0.005
BACKOFF_MAX = 0.1

# What handle_request_noblock() tells the loop about the listener.
HANDLED = 0  # a request was taken (or refused): keep draining
BACK_OFF = 1  # out of fds or memory: pause accepting for a while
LISTENER_CLOSED = 2  # the listening socket was closed under us: stop accepting

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
    """A self-pipe: ``wake()`` makes the read end readable."""

    def __init__(self) -> None:
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


def handle_request_noblock(server: BaseServer, plan: Plan | None = None) -> int:
    """The stdlib's ``BaseServer._handle_request_noblock`` chain.

    Returns HANDLED, or what a failed ``get_request()`` says of the listener
    (the stdlib ignores every OSError there, and so do we, but a loop that
    retried at once would spin).  With a ``plan`` whose max_connections is
    reached and overload is "refuse", the connection goes to
    ``handle_overload()`` instead of the chain.
    """
    try:
        request, client_address = server.get_request()
    except OSError as exc:
        if exc.errno in RESOURCE_ERRNOS:
            return BACK_OFF
        if exc.errno in (errno.EBADF, errno.ENOTSOCK):
            return LISTENER_CLOSED
        return HANDLED
    if plan is not None and plan.max_connections and plan.overload == "refuse":
        assert plan.connections is not None  # Plan() requires it with max_connections
        if len(plan.connections) > plan.max_connections:
            plan.connections.discard(request)
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


class Plan:
    """Which steps of the request chain the core may do itself (see
    ``fastserver._plan``).  The twin does every step through the server's
    methods, which is always correct; it only needs ``handle_one``."""

    def __init__(self, *, handle_one: Callable[[], object] | None = None, accept: str = "call",
                 verify_default: bool = False, process_default: bool = False,
                 finish_default: bool = False, shutdown: str = "call",
                 service_actions_default: bool = False, listener: socket.socket | None = None,
                 tcp_nodelay: bool = False, idle_timeout: float | None = None,
                 connections: OpenConnections | None = None, max_connections: int | None = None,
                 overload: str = "wait", leftover_datagrams: list[Datagram] | None = None) -> None:
        if accept not in ("call", "stream", "datagram"):
            raise KeyError(accept)
        if shutdown not in ("call", "stream", "nothing"):
            raise KeyError(shutdown)
        if accept != "call" and listener is None:
            raise ValueError(f"accept={accept!r} needs the listening socket")
        self.handle_one = handle_one
        self.accept = accept
        self.verify_default = verify_default
        self.process_default = process_default
        self.finish_default = finish_default
        self.shutdown = shutdown
        self.service_actions_default = service_actions_default
        self.listener = listener
        # The twin calls get_request(), which sets these itself.
        self.tcp_nodelay = tcp_nodelay
        self.idle_timeout = idle_timeout
        if max_connections is not None and connections is None:
            raise ValueError("max_connections needs the connections registry")
        if overload not in ("wait", "refuse"):
            raise ValueError(f"overload must be 'wait' or 'refuse', not {overload!r}")
        self.connections = connections
        self.max_connections = max_connections or 0
        self.overload = overload
        # The twin receives one datagram per get_request(): none is ever
        # left over.  The compiled core's batches may be.
        self.leftover_datagrams = leftover_datagrams


def _shutdown_requested(server: BaseServer) -> bool:
    return server._BaseServer__shutdown_request


def _full(plan: Plan) -> bool:
    """At max_connections with overload="wait"?  Says so to the closers
    first, then looks again, so a connection closed in between is never
    missed."""
    if not plan.max_connections or plan.overload != "wait":
        return False
    connections = plan.connections
    assert connections is not None  # Plan() requires it with max_connections
    if len(connections) < plan.max_connections:
        return False
    connections.waiting_for_room = True
    if len(connections) < plan.max_connections:
        connections.waiting_for_room = False
        return False
    return True


def serve_forever(server: BaseServer, poll_interval: float | None, waker: Waker,
                  plan: Plan) -> None:
    """Serve until ``server.shutdown()``: the loop of ``BaseServer.serve_forever``.

    Each wake-up drains up to DRAIN_BATCH ready requests before waiting
    again.  ``service_actions()`` runs after every request and after every
    wake-up without one, as in the stdlib (where each select() returns once
    per request).
    """
    listen_fd = server.fileno()
    wake_fd = waker.fileno()
    handle_one = plan.handle_one
    service_actions = None if plan.service_actions_default else server.service_actions
    poller = Poller()
    backoff = 0.0  # the current pause after EMFILE & co, 0 while accepting
    resume_at = 0.0
    listening, listener_gone = True, False
    waiting_for_room = False  # at max_connections, overload="wait"
    try:
        poller.register(listen_fd)
        poller.register(wake_fd)
        waker.drain()  # a shutdown() of an earlier loop may have left a wake-up
        while not _shutdown_requested(server):
            timeout = poll_interval
            if not listening and not listener_gone and not waiting_for_room:
                pause_left = max(0.0, resume_at - monotonic())
                timeout = pause_left if timeout is None else min(timeout, pause_left)
            ready = poller.wait(timeout)
            if _shutdown_requested(server):
                break
            if wake_fd in ready:
                waker.drain()
            listener_ready = listening and listen_fd in ready
            if waiting_for_room:
                assert plan.connections is not None  # _full() was true
                if len(plan.connections) < plan.max_connections:
                    plan.connections.waiting_for_room = waiting_for_room = False
                    poller.register(listen_fd)
                    listening = listener_ready = True  # the clients wait in the backlog
            elif not listening and not listener_gone and monotonic() >= resume_at:
                poller.register(listen_fd)
                listening = listener_ready = True  # try at once: the clients are waiting
            if not listener_ready:
                if service_actions is not None:
                    service_actions()  # a timeout or a wake-up
                continue
            for handled in range(1, DRAIN_BATCH + 1):
                if _full(plan):
                    # New connections wait in the kernel's backlog; the next
                    # close wakes the loop (OpenConnections.discard).
                    poller.unregister(listen_fd)
                    listening = False
                    waiting_for_room = True
                    if handled == 1 and service_actions is not None:
                        service_actions()
                    break
                if handle_one is None:
                    status = handle_request_noblock(server, plan)
                else:
                    handle_one()
                    status = HANDLED
                # After every request, as the stdlib's loop does after every
                # select(): ForkingMixIn's max_children relies on it.
                if service_actions is not None:
                    service_actions()
                if status != HANDLED:
                    poller.unregister(listen_fd)
                    listening = False
                    if status == BACK_OFF:
                        backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, backoff * 2))
                        resume_at = monotonic() + backoff
                    else:  # closed: wait for the waker alone until shutdown()
                        listener_gone = True
                    break
                backoff = 0.0
                if _shutdown_requested(server) or not wait_readable(listen_fd, 0):
                    break
    finally:
        if waiting_for_room and plan.connections is not None:
            plan.connections.waiting_for_room = False
        poller.close()


class SocketWriter(io.BufferedIOBase):
    """wfile for StreamRequestHandler: the stdlib's ``_SocketWriter``, an
    unbuffered writer whose write() is ``sock.sendall()``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer) -> int:
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


class LineTooLong(ValueError):
    """``rfile.readline()`` (or iteration) found no newline within the
    reader's ``max_line_length`` bytes.  Those bytes were consumed; they are
    in ``data``, so nothing is lost (asyncio's StreamReader raises a
    ValueError for the same reason)."""

    def __init__(self, limit: int, data: bytes = b"") -> None:
        super().__init__(f"line longer than {limit} bytes (max_line_length)")
        self.limit = limit
        self.data = data


class LineLimitedReader(io.BufferedReader):
    """``sock.makefile('rb', bufsize)`` whose readline() with no size stops
    at ``max_line_length`` bytes with LineTooLong, so a client that never
    sends a newline cannot make the server buffer without bound.  A size
    given by the caller (``readline(65537)``, as http.server does) is obeyed
    as is."""

    def __init__(self, raw: io.RawIOBase, buffer_size: int, max_line_length: int) -> None:
        super().__init__(raw, buffer_size)
        self.max_line_length = max_line_length

    def readline(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return super().readline(size)
        line = super().readline(self.max_line_length)
        if len(line) >= self.max_line_length and not line.endswith(b"\n"):
            raise LineTooLong(self.max_line_length, line)
        return line


def open_reader(sock: socket.socket, buffer_size: int | None,
                max_line_length: int | None) -> io.BufferedIOBase:
    """StreamRequestHandler's rfile: ``sock.makefile('rb', buffer_size)``,
    with readline() bounded by ``max_line_length`` when that is not None
    and the reader is buffered."""
    if max_line_length is None or buffer_size == 0 or not isinstance(sock, socket.socket):
        # Unbuffered (buffer_size 0), a raw SocketIO, as the stdlib's rfile
        # is then: it reads the same way.
        return cast(io.BufferedIOBase, sock.makefile("rb", buffer_size))
    if max_line_length <= 0:
        raise ValueError("max_line_length must be positive or None")
    if buffer_size is None or buffer_size < 0:
        buffer_size = io.DEFAULT_BUFFER_SIZE
    # What socket.makefile() does for "rb": SocketIO + a buffered reader,
    # counted in the socket's _io_refs so close() waits for the file.
    reader = LineLimitedReader(socket.SocketIO(sock, "rb"), buffer_size, max_line_length)
    # A private attribute of socket.socket, absent from typeshed's stub.
    sock._io_refs += 1  # type: ignore[attr-defined]
    return reader
