# rfile and wfile for StreamRequestHandler, in C.
#
# SocketReader is what ``sock.makefile('rb', bufsize)`` gives (an
# io.BufferedReader over socket.SocketIO) and SocketWriter is the stdlib's
# ``socketserver._SocketWriter`` (write = sendall): the same methods, results
# and exceptions, including the socket's timeout (read from the socket on
# every system call, so a handler may change it at any time), EINTR (signal
# handlers run and may raise) and SocketIO's refusal to read after a timeout.
# They make the system calls themselves instead of going through
# SocketIO.readinto and socket.sendall frames; on a green socket
# (core/green.pxi) they make the green socket's, which wait in the loop.

cdef int _raise_errno(int err) except -1:
    # OSError(errno, message) picks the subclass (ConnectionResetError...)
    # as PyErr_SetFromErrno does.
    raise OSError(err, _os.strerror(err))


cdef int _wait_for(int fd, short events, double deadline) except -1:
    """poll(2) until ``fd`` is ready or ``deadline``: 1 ready, 0 timed out."""
    cdef poll.pollfd p
    cdef int n, ms
    cdef double remaining
    while True:
        remaining = deadline - compat.fs_monotonic()
        if remaining <= 0:
            return 0
        p.fd = fd
        p.events = events
        p.revents = 0
        ms = compat.fs_timeout_ms(remaining)
        with nogil:
            n = poll.poll(&p, 1, ms)
        if n > 0:
            return 1
        if n == 0:
            continue  # the deadline check above decides
        if errno.errno != errno.EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()


cdef Py_ssize_t _sock_recv(object sock, char *dst, Py_ssize_t size) except -3:
    """One recv() as ``sock.recv_into()`` does it: bytes received, 0 at EOF,
    WOULD_BLOCK, or an exception (``socket.timeout`` after its timeout)."""
    cdef object timeout = sock.gettimeout()
    cdef int fd = sock.fileno()
    cdef double seconds, deadline = 0
    cdef ssize_t n
    cdef int err
    if fd < 0:
        raise OSError(errno.EBADF, "Bad file descriptor")
    if timeout is not None:
        seconds = timeout
        deadline = compat.fs_monotonic() + seconds
    while True:
        if timeout is not None and seconds > 0:
            if not _wait_for(fd, poll.POLLIN, deadline):
                raise _socket_timeout("timed out")
        with nogil:
            n = socket.recv(fd, dst, size, 0 if timeout is None else socket.MSG_DONTWAIT)
        if n >= 0:
            return n
        err = errno.errno
        if err == errno.EINTR:
            PyErr_CheckSignals()
            continue
        if err == errno.EAGAIN or err == errno.EWOULDBLOCK:
            if timeout is not None and seconds > 0:
                continue  # spurious readiness: wait again
            return WOULD_BLOCK
        _raise_errno(err)


cdef int _sock_sendall(object sock, const char *data, Py_ssize_t size) except -1:
    """``sock.sendall()``: the timeout bounds the whole call (Python 3.5+)."""
    cdef object timeout = sock.gettimeout()
    cdef int fd = sock.fileno()
    cdef double deadline = 0
    cdef ssize_t n
    cdef int err
    cdef bint has_timeout = timeout is not None and timeout > 0
    if fd < 0:
        raise OSError(errno.EBADF, "Bad file descriptor")
    if has_timeout:
        deadline = compat.fs_monotonic() + <double>timeout
    while size > 0:
        if has_timeout and not _wait_for(fd, poll.POLLOUT, deadline):
            raise _socket_timeout("timed out")
        with nogil:
            n = socket.send(fd, data, size,
                            socket.MSG_NOSIGNAL | (0 if timeout is None else socket.MSG_DONTWAIT))
        if n >= 0:
            data += n
            size -= n
            continue
        err = errno.errno
        if err == errno.EINTR:
            PyErr_CheckSignals()
            continue
        if (err == errno.EAGAIN or err == errno.EWOULDBLOCK) and has_timeout:
            continue
        _raise_errno(err)
    return 0


cdef class SocketReader:
    """``sock.makefile('rb', bufsize)`` in C: a buffered binary reader.

    Buffered data is ``buffer[start:end]``; the buffer grows for a long
    line or a large read() and shrinks back once drained.
    """

    def __cinit__(self, *args, **kwargs):
        # Takes anything: __init__ checks the arguments, and an object whose
        # __cinit__ failed would still be finalized (and closed) half-made.
        self.buffer = NULL
        self.is_closed = True

    def __init__(self, sock, Py_ssize_t buffer_size=-1, max_line_length=None):
        if buffer_size < 0:
            buffer_size = _DEFAULT_BUFFER_SIZE
        if buffer_size == 0:
            raise ValueError("SocketReader is buffered: use sock.makefile('rb', 0) for raw")
        if max_line_length is None:
            self.max_line = -1
        elif max_line_length <= 0:
            raise ValueError("max_line_length must be positive or None")
        else:
            self.max_line = max_line_length
        self.default_capacity = self.capacity = buffer_size
        if type(sock) is _GreenSocket:
            # A green reader holds a buffer only while it has data: an idle
            # connection waits in the loop with none (allocated after the
            # wait, given back when drained), so that thousands of them
            # cost no buffers.
            self.green = sock._green_io
            self.capacity = 0
        else:
            self.buffer = <char *>malloc(buffer_size)
            if self.buffer == NULL:
                raise MemoryError()
        self.sock = sock
        sock._io_refs += 1  # as makefile() does: close() of the socket waits for ours
        self.is_closed = False

    def __dealloc__(self):
        free(self.buffer)

    def __del__(self):
        if not self.is_closed:
            self.close()

    # -- io.BufferedIOBase surface ------------------------------------------

    @property
    def closed(self):
        return self.is_closed

    @property
    def mode(self):
        return "rb"

    @property
    def name(self):
        with self.lock:
            return -1 if self.is_closed else self.sock.fileno()

    def readable(self):
        self._check_open("I/O operation on closed file.")
        return True

    def writable(self):
        self._check_open("I/O operation on closed file.")
        return False

    def seekable(self):
        self._check_open("I/O operation on closed file.")
        return False

    def isatty(self):
        self._check_open("I/O operation on closed file.")
        return False

    def fileno(self):
        with self.lock:
            self._check_open("I/O operation on closed file.")
            return self.sock.fileno()

    def close(self):
        with self.lock:
            if self.is_closed:
                return
            self.is_closed = True
            self.start = self.end = 0
            sock, self.sock = self.sock, None
        sock._decref_socketios()

    def detach(self):
        raise _io.UnsupportedOperation("detach")

    def __enter__(self):
        self._check_open("I/O operation on closed file.")
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __iter__(self):
        self._check_open("I/O operation on closed file.")
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def read(self, size=-1):
        cdef Py_ssize_t n = -1 if size is None else size
        with self.lock:
            self._check_open("read of closed file")
            if n < -1:
                raise ValueError("read length must be non-negative or -1")
            if n < 0:
                return self._read_all()
            return self._read_exactly(n)

    def read1(self, Py_ssize_t size=-1):
        with self.lock:
            self._check_open("read of closed file")
            if size < 0:
                size = self.default_capacity
            if size == 0:
                return b""
            if self.end == self.start:
                self._fill(size)  # WOULD_BLOCK leaves it empty: b"", as BufferedReader
            return self._take(min(size, self.end - self.start))

    def readinto(self, b):
        with self.lock:
            return self._readinto(b, False)

    def readinto1(self, b):
        with self.lock:
            return self._readinto(b, True)

    def peek(self, Py_ssize_t size=0):
        with self.lock:
            self._check_open("peek of closed file")
            if self.end == self.start:
                self._fill(self.default_capacity)
            return self.buffer[self.start:self.end]

    @property
    def max_line_length(self):
        return None if self.max_line < 0 else self.max_line

    def readline(self, size=-1):
        cdef Py_ssize_t limit = -1 if size is None else size
        with self.lock:
            self._check_open("readline of closed file")
            if limit < 0:
                return self._bounded_readline()
            return self._readline(limit)

    def readlines(self, hint=-1):
        cdef Py_ssize_t total = 0, limit = -1 if hint is None else hint
        lines = []
        with self.lock:
            self._check_open("readline of closed file")
            while True:
                line = self._bounded_readline()
                if not line:
                    return lines
                lines.append(line)
                total += len(line)
                if 0 < limit < total:  # io's rule: stop once the total exceeds hint
                    return lines

    def __repr__(self):
        return f"<fastserver SocketReader name={self.name!r}>"

    # -- internals ------------------------------------------------------------

    cdef int _check_open(self, str message) except -1:
        if self.is_closed:
            raise ValueError(message)
        return 0

    cdef bytes _take(self, Py_ssize_t n):
        data = PyBytes_FromStringAndSize(self.buffer + self.start, n)
        self.start += n
        if self.start == self.end:
            self._drained()
        return data

    cdef void _drained(self) noexcept:
        """Empty: restart at the front, and give back a grown buffer."""
        cdef char *smaller
        self.start = self.end = 0
        if self.green is not None:
            self.green.hub.give_buffer(self.buffer, self.capacity)
            self.buffer = NULL
            self.capacity = 0
        elif self.capacity > 4 * self.default_capacity:
            smaller = <char *>realloc(self.buffer, self.default_capacity)
            if smaller != NULL:
                self.buffer = smaller
                self.capacity = self.default_capacity

    cdef int _reserve(self, Py_ssize_t room) except -1:
        """Make room for ``room`` more bytes after ``end``."""
        cdef Py_ssize_t used = self.end - self.start
        cdef Py_ssize_t wanted
        cdef char *grown
        if self.capacity - self.end >= room:
            return 0
        if self.start > 0:
            string.memmove(self.buffer, self.buffer + self.start, used)
            self.start, self.end = 0, used
            if self.capacity - self.end >= room:
                return 0
        wanted = max(used + room, 2 * self.capacity)
        if self.buffer == NULL and self.green is not None and room <= self.default_capacity:
            # A green reader's buffer after a wait: from its hub's spares.
            self.buffer = self.green.hub.take_buffer(self.default_capacity)
            if self.buffer == NULL:
                raise MemoryError()
            self.capacity = self.default_capacity
            return 0
        grown = <char *>realloc(self.buffer, wanted)
        if grown == NULL:
            raise MemoryError()
        self.buffer, self.capacity = grown, wanted
        return 0

    cdef Py_ssize_t _fill(self, Py_ssize_t at_least) except -3:
        """One recv() appended to the buffer: bytes got, 0 at EOF, WOULD_BLOCK."""
        cdef Py_ssize_t got
        cdef double deadline = -1.0
        if self.timed_out:
            raise OSError("cannot read from timed out object")
        if self.end == self.start:
            self.start = self.end = 0
            if self.green is not None:
                try:
                    green_wait_readable(self.green, &deadline)  # with no buffer held
                except _socket_timeout:
                    self.timed_out = True
                    raise
        self._reserve(max(at_least, self.default_capacity) if self.capacity - self.end == 0
                      else min(at_least, self.capacity - self.end))
        try:
            if self.green is None:
                got = _sock_recv(self.sock, self.buffer + self.end, self.capacity - self.end)
            else:
                got = green_recv(self.green, self.buffer + self.end, self.capacity - self.end, 0,
                                 deadline)
        except _socket_timeout:
            self.timed_out = True
            raise
        if got > 0:
            self.end += got
        return got

    cdef object _read_exactly(self, Py_ssize_t n):
        """read(n): up to ``n`` bytes, fewer only at EOF (or None if a
        non-blocking socket had nothing at all)."""
        cdef Py_ssize_t got
        if n == 0:
            return b""
        while self.end - self.start < n:
            self._reserve(n - (self.end - self.start))
            got = self._fill(n - (self.end - self.start))
            if got == 0:
                break
            if got == WOULD_BLOCK:
                if self.end == self.start:
                    return None
                break
        return self._take(min(n, self.end - self.start))

    cdef object _read_all(self):
        cdef Py_ssize_t got
        while True:
            got = self._fill(self.default_capacity)
            if got == 0:
                break
            if got == WOULD_BLOCK:
                if self.end == self.start:
                    return None
                break
        return self._take(self.end - self.start)

    cdef object _bounded_readline(self):
        """readline() with no size: up to max_line bytes (LineTooLong.py's twin)."""
        if self.max_line < 0:
            return self._readline(-1)
        line = self._readline(self.max_line)
        if len(line) >= self.max_line and (<bytes>line)[len(line) - 1] != 10:  # no b"\n"
            raise _LineTooLong(self.max_line, line)
        return line

    cdef object _readline(self, Py_ssize_t limit):
        cdef Py_ssize_t scanned = 0, span, got
        cdef char *newline
        while True:
            span = self.end - self.start
            if limit >= 0 and span > limit:
                span = limit
            newline = NULL if span == scanned else <char *>string.memchr(
                self.buffer + self.start + scanned, b'\n', span - scanned)
            if newline != NULL:
                return self._take(newline - (self.buffer + self.start) + 1)
            scanned = span
            if limit >= 0 and span >= limit:
                return self._take(limit)
            got = self._fill(self.default_capacity)
            if got == 0 or got == WOULD_BLOCK:
                return self._take(self.end - self.start)

    cdef object _readinto(self, b, bint just_once):
        cdef Py_buffer view
        cdef Py_ssize_t n, got
        self._check_open("readinto of closed file")
        try:
            PyObject_GetBuffer(b, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
        except BufferError:
            # What io.BufferedReader says of a read-only or non-contiguous buffer.
            raise TypeError("readinto() argument must be read-write bytes-like object, "
                            f"not {type(b).__name__}") from None
        try:
            if just_once:
                if self.end == self.start and view.len > 0:
                    got = self._fill(view.len)
                    if got == WOULD_BLOCK:
                        return None
            else:
                while self.end - self.start < view.len:
                    self._reserve(view.len - (self.end - self.start))
                    got = self._fill(view.len - (self.end - self.start))
                    if got == 0:
                        break
                    if got == WOULD_BLOCK:
                        if self.end == self.start:
                            return None
                        break
            n = min(view.len, self.end - self.start)
            string.memcpy(view.buf, self.buffer + self.start, n)
            self.start += n
            if self.start == self.end:
                self._drained()
            return n
        finally:
            PyBuffer_Release(&view)


cdef class SocketWriter:
    """The stdlib's ``socketserver._SocketWriter`` in C: an unbuffered
    binary writer whose write() is ``sock.sendall()``."""

    def __init__(self, sock):
        self.sock = sock
        if type(sock) is _GreenSocket:
            self.green = sock._green_io

    @property
    def closed(self):
        return self.is_closed

    def writable(self):
        return True

    def readable(self):
        self._check_open()
        return False

    def seekable(self):
        self._check_open()
        return False

    def isatty(self):
        self._check_open()
        return False

    def fileno(self):
        return self.sock.fileno()

    def write(self, b):
        # Like _SocketWriter.write, which does not check closed: it is the
        # socket that decides.
        cdef Py_buffer view
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            with self.lock:
                if self.green is None:
                    _sock_sendall(self.sock, <const char *>view.buf, view.len)
                else:
                    green_send(self.green, <const char *>view.buf, view.len, 0, True)
            return view.len
        finally:
            PyBuffer_Release(&view)

    def writelines(self, lines):
        self._check_open()
        for line in lines:
            self.write(line)

    def flush(self):
        self._check_open()

    def close(self):
        self.is_closed = True

    def detach(self):
        raise _io.UnsupportedOperation("detach")

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"<fastserver SocketWriter sock={self.sock!r}>"

    cdef int _check_open(self) except -1:
        if self.is_closed:
            raise ValueError("I/O operation on closed file.")
        return 0


_io.BufferedIOBase.register(SocketReader)
_io.BufferedIOBase.register(SocketWriter)
