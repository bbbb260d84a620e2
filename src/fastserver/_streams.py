"""StreamRequestHandler's file objects, in Python.

These are what the pure-Python core gives a handler, and what the compiled
core falls back to for a connection its C reader and writer do not take
(an ``ssl.SSLSocket``, a subclass of ``socket.socket``, an unbuffered
``rbufsize``).  Both cores import them from here, so there is one copy.
"""
from __future__ import annotations

import io
import socket
import threading
from typing import TYPE_CHECKING, cast

from .errors import LineTooLong

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class SocketWriter(io.BufferedIOBase):
    """wfile for StreamRequestHandler: the stdlib's ``_SocketWriter``, an
    unbuffered writer whose write() is ``sock.sendall()``.

    Unlike the stdlib's, write() holds a lock for the whole sendall(), as
    the compiled core's writer does: a sendall() that the socket takes in
    several send()s would otherwise interleave with another thread's, and
    two threads sharing one wfile must see their writes arrive whole.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer) -> int:
        with self._lock:
            self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


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
