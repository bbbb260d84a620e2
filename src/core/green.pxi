# Green handlers: each connection's request chain in a greenlet, switched
# by the serve loop.
#
# A handler written for threads (blocking recv, sendall, rfile.readline)
# runs unchanged: the connection is a GreenSocket, whose reads and writes
# that would block park the greenlet on the loop's poller and switch to the
# loop (the hub); readiness switches back.  Switching a greenlet costs a
# fraction of a microsecond where handing a request to a sleeping thread
# costs several (a futex wake, a context switch, a GIL hand-off), and an
# idle connection costs a parked greenlet, not a thread.
#
# The pieces:
#   Waiter      something a greenlet waits for: a deadline, a wake-up
#   GreenIO     a connection's fd as the hub sees it: who waits on it, for
#               what, which readiness edges arrived meanwhile
#   GreenHub    the greenlets of one loop: spawning, parking, waking,
#               timers, completions from other threads
#   GreenSocket the socket.socket subclass green handlers get
#
# Readiness comes as edges (Poller.watch): a connection is registered once,
# at its first wait, and each change of state is reported once.  An edge
# that arrives while the connection's greenlet is busy is remembered in
# GreenIO.readable/.writable, so a later wait returns at once instead of
# parking until a change that already happened.  A read that came back
# short (fewer bytes than asked) drained the socket: the next read waits
# first instead of paying a recv(2) that would say EAGAIN -- unless the
# peer has shut down (GreenIO.hangup), since end-of-file is a state that
# stays readable without another edge.

import threading as _threading
from collections import deque as _deque
from heapq import heappop as _heappop, heappush as _heappush
from time import sleep as _time_sleep

# What the hub passes to a parked greenlet it switches back to.
cdef enum:
    WAKE_READY = 1       # the fd is ready, or the thread's work is done
    WAKE_TIMED_OUT = 2   # the deadline passed first
    WAKE_CLOSED = 3      # the socket was closed under the wait
cdef tuple _WAKE_READY_ARGS = (WAKE_READY,)
cdef tuple _WAKE_TIMED_OUT_ARGS = (WAKE_TIMED_OUT,)
cdef tuple _WAKE_CLOSED_ARGS = (WAKE_CLOSED,)
cdef tuple _NO_ARGS = ()

# Read buffers a hub keeps for its green readers (see GreenHub.take_buffer).
cdef enum:
    SPARE_BUFFERS = 64

# The hub serving in this thread, for green.sleep() and run_in_thread().
_running_hubs = _threading.local()


cdef bint _greenlet_ready = False


def import_greenlet():
    """Read greenlet's C API (ImportError when greenlet is not installed)."""
    global _greenlet_ready
    if not _greenlet_ready:
        greenlet.import_api()
        _greenlet_ready = True


cdef class Waiter:
    """What one parked greenlet waits for, as the hub's timers see it."""

    cdef void clear(self) noexcept:
        self.greenlet = None
        self.deadline = 0.0


cdef class GreenIO(Waiter):
    """A green connection's fd, as its hub sees it."""

    def __init__(self, GreenHub hub, int fd):
        self.hub = hub
        self.fd = fd
        self.timeout = -1.0
        # A new connection's first read waits for its first edge (the
        # registration reports data already there at once): no recv(2)
        # that would say EAGAIN, and no buffer held while the client is
        # still silent.
        self.drained = True

    cdef double deadline_after(self, double now) noexcept:
        """The deadline of one operation starting ``now``: 0 for none."""
        return now + self.timeout if self.timeout > 0 else 0.0

    cdef int wait(self, int events, double deadline) except -1:
        """Until the fd is ready for ``events`` (READY_READ or READY_WRITE),
        or raise socket.timeout at ``deadline`` (0: none)."""
        cdef GreenHub hub = self.hub
        cdef int code
        if events == READY_READ and self.readable:
            self.readable = False
            return 0
        if events == READY_WRITE and self.writable:
            self.writable = False
            return 0
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        current = hub.parkable()
        if current is None:
            # Not one of the hub's greenlets (a thread of run_in_thread(), a
            # hook run by the loop itself): block this caller only.
            if not _wait_for(self.fd, poll.POLLIN if events == READY_READ else poll.POLLOUT,
                             deadline if deadline > 0 else compat.fs_monotonic() + 1e9):
                raise _socket_timeout("timed out")
            return 0
        if not self.watched:
            hub.poller.watch(self.fd)
            hub.ios[self.fd] = self
            self.watched = True
        hub.poller.arm(self.fd, events)
        self.waiting = events
        try:
            code = hub.park(self, deadline, current)
        finally:
            self.waiting = 0
        if code == WAKE_TIMED_OUT:
            raise _socket_timeout("timed out")
        if code == WAKE_CLOSED:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return 0

    cdef int detach_from_hub(self) except -1:
        """The socket closes: stop watching, and wake a greenlet parked on it."""
        cdef GreenHub hub = self.hub
        self.closed = True
        if self.watched:
            self.watched = False
            hub.poller.forget(self.fd)
            if hub.ios.get(self.fd) is self:
                del hub.ios[self.fd]
        if self.greenlet is not None and self.greenlet is not greenlet.getcurrent():
            # Another greenlet waits on it: the hub wakes it (only the hub
            # switches into a parked greenlet, so each switch returns there).
            hub.pending.append((self, self.greenlet, _WAKE_CLOSED_ARGS))
        return 0


cdef class _Task:
    """A greenlet's run(): the spawned call, then the hub's bookkeeping."""
    cdef GreenHub hub
    cdef object func
    cdef tuple args

    def __call__(self):
        try:
            self.func(*self.args)
        finally:
            self.hub.tasks.discard(greenlet.getcurrent())


cdef class GreenHub:
    """The greenlets of one serve loop, and what they wait for.

    Runs in the loop's greenlet (the one that called serve_forever): the
    loop hands it each ready connection fd (on_ready), asks it how long it
    may wait (next_timeout), and lets it fire due timers and the wake-ups of
    finished thread work (run_due).  Greenlets run only while the loop is
    in one of those calls; a greenlet runs until it waits, then the loop
    goes on.
    """

    def __cinit__(self, *args, **kwargs):
        self.spare_buffers = <char **>malloc(SPARE_BUFFERS * sizeof(char *))
        if self.spare_buffers == NULL:
            raise MemoryError()
        self.spare_count = 0
        self.spare_size = _DEFAULT_BUFFER_SIZE

    def __dealloc__(self):
        while self.spare_count:
            self.spare_count -= 1
            free(self.spare_buffers[self.spare_count])
        free(self.spare_buffers)

    def __init__(self, Poller poller, Waker waker, slow_callback_threshold=None):
        import_greenlet()
        self.poller = poller
        self.waker = waker
        self.ios = {}
        self.timers = []
        self.tasks = set()
        self.completions = _deque()
        self.pending = _deque()
        self.thread_ident = PyThread_get_thread_ident()
        self.slow_threshold = slow_callback_threshold or 0.0

    # -- the loop's side ------------------------------------------------------

    def start(self):
        """The calling greenlet becomes the hub: the parent of every task."""
        self.hub_greenlet = greenlet.getcurrent()
        self.thread_ident = PyThread_get_thread_ident()
        _running_hubs.hub = self

    def stop(self):
        self.hub_greenlet = None
        if getattr(_running_hubs, "hub", None) is self:
            _running_hubs.hub = None

    cpdef spawn(self, func, tuple args):
        """Run ``func(*args)`` in a new greenlet, at once, until it waits."""
        cdef _Task task = _Task.__new__(_Task)
        task.hub, task.func, task.args = self, func, args
        g = greenlet.new(task, self.hub_greenlet)
        self.tasks.add(g)
        self._switch(g, _NO_ARGS)

    cdef int on_ready(self, int fd, int events) except -1:
        """What the poller reported for a connection fd."""
        cdef GreenIO io = self.ios.get(fd)
        if io is None:
            return 0
        if events & READY_HANGUP:
            io.hangup = True
        if events & READY_READ:
            io.readable = True
        if events & READY_WRITE:
            io.writable = True
        if io.greenlet is None:
            return 0
        if io.waiting & READY_READ and io.readable:
            io.readable = False
        elif io.waiting & READY_WRITE and io.writable:
            io.writable = False
        else:
            return 0
        self.poller.disarm(fd)
        self.wake(io, _WAKE_READY_ARGS)
        return 0

    cdef double next_timeout(self, double interval) noexcept:
        """``interval`` (negative: none), shortened to the first timer."""
        cdef double left
        if self.pending or self.completions:
            return 0.0
        if not self.timers:
            return interval
        left = max(0.0, <double>(<tuple>self.timers[0])[0] - compat.fs_monotonic())
        return left if interval < 0 or left < interval else interval

    cdef int run_due(self) except -1:
        """Wake the greenlets whose thread work finished or whose deadline
        passed."""
        cdef Waiter waiter
        cdef double now
        cdef tuple entry
        while self.pending:
            entry = self.pending.popleft()
            waiter = entry[0]
            if waiter.greenlet is entry[1]:  # still parked where it was
                self.wake(waiter, entry[2])
        while self.completions:
            waiter = self.completions.popleft()
            if waiter.greenlet is not None:
                self.wake(waiter, _WAKE_READY_ARGS)
        if not self.timers:
            return 0
        now = compat.fs_monotonic()
        while self.timers:
            entry = self.timers[0]
            if <double>entry[0] > now:
                break
            _heappop(self.timers)
            waiter = entry[2]
            waiter.timer_entries -= 1
            if waiter.greenlet is None or waiter.deadline <= 0:
                continue  # woken otherwise since: a stale entry
            if waiter.deadline <= now:
                if isinstance(waiter, GreenIO):
                    self.poller.disarm((<GreenIO>waiter).fd)
                self.wake(waiter, _WAKE_TIMED_OUT_ARGS)
            elif waiter.timer_entries == 0:
                # Parked again since, with a later deadline: one entry
                # per waiter, moved along lazily.
                self._add_timer(waiter)
        return 0

    def run_until_done(self, deadline=None):
        """Serve the greenlets left until they have all finished (or
        ``deadline``, on the monotonic clock, passes: False then)."""
        cdef int fds[GREEN_MAX_EVENTS]
        cdef int events[GREEN_MAX_EVENTS]
        cdef int n, i
        cdef double timeout
        while self.tasks:
            timeout = -1.0
            if deadline is not None:
                timeout = deadline - compat.fs_monotonic()
                if timeout <= 0:
                    return False
            n = self.poller.wait_events(self.next_timeout(timeout), fds, events,
                                        GREEN_MAX_EVENTS)
            PyErr_CheckSignals()
            for i in range(n):
                if fds[i] == self.waker.read_fd:
                    self.waker._drain()
                else:
                    self.on_ready(fds[i], events[i])
            self.run_due()
        return True

    def kill_all(self):
        """End every greenlet left: GreenletExit is raised where each waits,
        so its handler's finally blocks and shutdown_request() run."""
        exit_type = greenlet.exit_type()
        for g in list(self.tasks):
            self.tasks.discard(g)
            if greenlet.active(g):
                try:
                    greenlet.throw(g, exit_type)
                except Exception:
                    _green_logger().exception("a green handler failed while it was ended")

    def open_greenlets(self):
        return len(self.tasks)

    # -- read buffers ---------------------------------------------------------

    cdef char *take_buffer(self, Py_ssize_t size) noexcept:
        """A read buffer of ``size`` bytes (NULL: out of memory).  Green
        readers hold one only between a wait and the moment they are
        drained; the hub keeps a few spares, so a busy connection does not
        pay a malloc() and a free() per request."""
        if size == self.spare_size and self.spare_count:
            self.spare_count -= 1
            return self.spare_buffers[self.spare_count]
        return <char *>malloc(size)

    cdef void give_buffer(self, char *buffer, Py_ssize_t size) noexcept:
        if buffer == NULL:
            return
        if size == self.spare_size and self.spare_count < SPARE_BUFFERS:
            self.spare_buffers[self.spare_count] = buffer
            self.spare_count += 1
        else:
            free(buffer)

    # -- the greenlets' side --------------------------------------------------

    cdef object parkable(self):
        """The calling greenlet if it is one of this hub's, in the hub's
        thread, while the hub runs; else None (it cannot park here)."""
        if self.hub_greenlet is None or PyThread_get_thread_ident() != self.thread_ident:
            return None
        current = greenlet.getcurrent()
        return None if current is self.hub_greenlet else current

    cdef bint can_park(self) except -1:
        return self.parkable() is not None

    cdef int park(self, Waiter waiter, double deadline, current=None) except -1:
        """Switch to the hub until woken; what woke us (WAKE_*).
        ``current``: the calling greenlet, when the caller has it."""
        waiter.greenlet = greenlet.getcurrent() if current is None else current
        waiter.deadline = deadline
        if deadline > 0 and (waiter.timer_entries == 0 or deadline < waiter.timer_at):
            self._add_timer(waiter)
        try:
            return greenlet.switch(self.hub_greenlet, _NO_ARGS)
        finally:
            waiter.clear()

    cdef int _add_timer(self, Waiter waiter) except -1:
        self.timer_seq += 1
        _heappush(self.timers, (waiter.deadline, self.timer_seq, waiter))
        waiter.timer_entries += 1
        waiter.timer_at = waiter.deadline
        return 0

    cdef int wake(self, Waiter waiter, tuple args) except -1:
        g = waiter.greenlet
        waiter.clear()
        self._switch(g, args)
        return 0

    cdef int _switch(self, g, tuple args) except -1:
        cdef double started
        if self.slow_threshold <= 0:
            greenlet.switch(g, args)
            return 0
        started = compat.fs_monotonic()
        greenlet.switch(g, args)
        held = compat.fs_monotonic() - started
        if held > self.slow_threshold:
            _report_slow_greenlet(g, held)
        return 0

    def sleep(self, double seconds):
        """Park the calling greenlet for ``seconds``; 0 lets the other
        ready greenlets run first."""
        cdef Waiter waiter = Waiter.__new__(Waiter)
        if not self.can_park():
            _time_sleep(seconds)
        elif seconds > 0:
            self.park(waiter, compat.fs_monotonic() + seconds)
        else:
            waiter.greenlet = greenlet.getcurrent()
            self.pending.append((waiter, waiter.greenlet, _WAKE_READY_ARGS))
            self.park(waiter, 0.0)

    def run_in_thread(self, executor, func, args, kwargs):
        cdef Waiter waiter
        if not self.can_park():
            return func(*args, **kwargs)
        waiter = Waiter.__new__(Waiter)
        future = executor.submit(func, *args, **kwargs)
        completions, waker = self.completions, self.waker

        def done(_):
            completions.append(waiter)
            waker.wake()

        future.add_done_callback(done)
        try:
            self.park(waiter, 0.0)
        except BaseException:
            future.cancel()
            raise
        return future.result()


def running_hub():
    """The hub serving in this thread, or None."""
    return getattr(_running_hubs, "hub", None)


cdef object _report_slow_greenlet(g, double held):
    frame = getattr(g, "gr_frame", None)
    where = "finished" if frame is None else (
        f"then waited at {frame.f_code.co_filename}:{frame.f_lineno}")
    _green_logger().warning(
        "a green handler held the loop for %.1f ms (%s): blocking work "
        "belongs in fastserver.green.run_in_thread()", held * 1e3, where)


cdef object _green_logger():
    import logging
    return logging.getLogger("fastserver.green")


# -- the green socket's system calls ------------------------------------------

cdef int green_wait_readable(GreenIO io, double *deadline) except -1:
    """Before a read: if the last one drained the socket, wait for the next
    edge (``deadline[0]`` set from the timeout when it is negative).  Not
    after a hang-up, which is a state that the edge announcing it may
    already have reported (with the data), nor with timeout 0."""
    if io.drained and io.timeout != 0 and not io.hangup:
        io.drained = False
        if deadline[0] < 0:
            deadline[0] = io.deadline_after(compat.fs_monotonic())
        io.wait(READY_READ, deadline[0])
    return 0


cdef Py_ssize_t green_recv(GreenIO io, char *dst, Py_ssize_t size, int flags,
                           double deadline=-1.0) except -3:
    """recv(2) for a green socket: bytes got, 0 at EOF, WOULD_BLOCK (only
    with timeout 0), parking the greenlet while there is nothing.
    ``deadline``: the call's, when the caller has already waited (else
    negative: from the timeout, at the first wait)."""
    cdef ssize_t n
    cdef int err
    if io.closed:
        raise OSError(errno.EBADF, "Bad file descriptor")
    while True:
        green_wait_readable(io, &deadline)
        n = socket.recv(io.fd, dst, size, flags | socket.MSG_DONTWAIT)
        if n >= 0:
            io.drained = 0 < n < size
            return n
        err = errno.errno
        if err == errno.EINTR:
            PyErr_CheckSignals()
            continue
        if err == errno.EAGAIN or err == errno.EWOULDBLOCK:
            if io.timeout == 0:
                return WOULD_BLOCK
            # Wait, then try again; any edge seen so far is older than
            # this EAGAIN (edges are recorded only while we wait).
            io.readable = False
            io.drained = True
            continue
        _raise_errno(err)


cdef Py_ssize_t green_send(GreenIO io, const char *data, Py_ssize_t size, int flags,
                           bint all_of_it) except -3:
    """send(2) (``all_of_it``: sendall) for a green socket: bytes sent.
    With timeout 0, EAGAIN is BlockingIOError, as on a non-blocking socket;
    sendall's timeout bounds the whole call, as socket.sendall's does."""
    cdef ssize_t n
    cdef Py_ssize_t sent = 0
    cdef int err
    cdef double deadline = io.deadline_after(compat.fs_monotonic())
    if io.closed:
        raise OSError(errno.EBADF, "Bad file descriptor")
    while True:
        n = socket.send(io.fd, data + sent, size - sent,
                        flags | socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
        if n >= 0:
            sent += n
            if not all_of_it or sent >= size:
                return sent
            continue
        err = errno.errno
        if err == errno.EINTR:
            PyErr_CheckSignals()
            continue
        if (err != errno.EAGAIN and err != errno.EWOULDBLOCK) or io.timeout == 0:
            _raise_errno(err)
        io.writable = False  # any edge seen so far is older than this EAGAIN
        io.wait(READY_WRITE, deadline)


cdef object _cooperate(sock, method, int events, tuple args):
    """``method(sock, *args)`` (a _socket.socket method on the non-blocking
    fd) until it does not say EAGAIN, waiting for ``events`` in between."""
    cdef GreenIO io = sock._green_io
    cdef double deadline = io.deadline_after(compat.fs_monotonic())
    while True:
        try:
            return method(sock, *args)
        except BlockingIOError:
            if io.timeout == 0:
                raise
        io.wait(events, deadline)


cdef extern from *:
    """
    /* recv() into a bytes object made for it and shrunk to what arrived,
     * as socket.recv() does: while only the core holds it (a raw pointer,
     * refcount 1), _PyBytes_Resize may shrink it in place. */
    static PyObject *fs_bytes_alloc(Py_ssize_t size)
    { return PyBytes_FromStringAndSize(NULL, size); }
    static char *fs_bytes_buffer(PyObject *b) { return PyBytes_AS_STRING(b); }
    static PyObject *fs_bytes_finish(PyObject *b, Py_ssize_t n)
    {
        if (n != PyBytes_GET_SIZE(b) && _PyBytes_Resize(&b, n) < 0)
            return NULL;
        return b;
    }
    static void fs_bytes_drop(PyObject *b) { Py_DECREF(b); }
    """
    PyObject *fs_bytes_alloc(Py_ssize_t size)
    char *fs_bytes_buffer(PyObject *b)
    object fs_bytes_finish(PyObject *b, Py_ssize_t n)  # steals b
    void fs_bytes_drop(PyObject *b)


cdef GreenIO _io_of(sock):
    io = sock._green_io
    if io is None:
        raise OSError(errno.EBADF, "Bad file descriptor")
    return <GreenIO>io


cdef object _check_timeout_value(value):
    """socket.settimeout()'s rules: None, or a non-negative number."""
    if value is None:
        return -1.0
    seconds = float(value)  # TypeError for a string, as socket's
    if seconds < 0:
        raise ValueError("Timeout value out of range")
    return seconds


class GreenSocket(_socket.socket):
    """A connection of a green server: a ``socket.socket`` whose blocking
    calls wait in the loop instead of in the kernel.

    The fd is non-blocking; the timeout the handler sees (gettimeout(),
    settimeout(), setblocking()) is kept here and applied by each call, as
    the stdlib applies a socket's: per call, ``socket.timeout`` when it
    passes, BlockingIOError with timeout 0.
    """

    __slots__ = ("_green_io",)

    def recv(self, Py_ssize_t bufsize, int flags=0):
        cdef GreenIO io = _io_of(self)
        cdef PyObject *data
        cdef Py_ssize_t n
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        data = fs_bytes_alloc(bufsize)
        if data == NULL:
            raise MemoryError()
        try:
            n = green_recv(io, fs_bytes_buffer(data), bufsize, flags)
            if n == WOULD_BLOCK:
                _raise_errno(errno.EAGAIN)
        except BaseException:
            fs_bytes_drop(data)
            raise
        return fs_bytes_finish(data, n)

    def recv_into(self, buffer, Py_ssize_t nbytes=0, int flags=0):
        cdef GreenIO io = _io_of(self)
        cdef Py_buffer view
        cdef Py_ssize_t n
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if nbytes == 0 or nbytes > view.len:
                if nbytes > view.len:
                    raise ValueError("buffer too small for requested bytes")
                nbytes = view.len
            n = green_recv(io, <char *>view.buf, nbytes, flags)
        finally:
            PyBuffer_Release(&view)
        if n == WOULD_BLOCK:
            _raise_errno(errno.EAGAIN)
        return n

    def send(self, data, int flags=0):
        cdef GreenIO io = _io_of(self)
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return green_send(io, <const char *>view.buf, view.len, flags, False)
        finally:
            PyBuffer_Release(&view)

    def sendall(self, data, int flags=0):
        cdef GreenIO io = _io_of(self)
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            green_send(io, <const char *>view.buf, view.len, flags, True)
        finally:
            PyBuffer_Release(&view)

    def recvfrom(self, *args):
        return _cooperate(self, _c_socket.socket.recvfrom, READY_READ, args)

    def recvfrom_into(self, *args):
        return _cooperate(self, _c_socket.socket.recvfrom_into, READY_READ, args)

    def recvmsg(self, *args):
        return _cooperate(self, _c_socket.socket.recvmsg, READY_READ, args)

    def recvmsg_into(self, *args):
        return _cooperate(self, _c_socket.socket.recvmsg_into, READY_READ, args)

    def sendto(self, *args):
        return _cooperate(self, _c_socket.socket.sendto, READY_WRITE, args)

    def sendmsg(self, *args):
        return _cooperate(self, _c_socket.socket.sendmsg, READY_WRITE, args)

    def sendfile(self, file, offset=0, count=None):
        # socket.sendfile's os.sendfile() path waits in a selector, which
        # would hold the loop: its send() path waits here instead.
        return self._sendfile_use_send(file, offset, count)

    def settimeout(self, value):
        _io_of(self).timeout = _check_timeout_value(value)

    def gettimeout(self):
        cdef double timeout = _io_of(self).timeout
        return None if timeout < 0 else timeout

    def setblocking(self, flag):
        _io_of(self).timeout = -1.0 if flag else 0.0

    def getblocking(self):
        return _io_of(self).timeout != 0

    @property
    def timeout(self):
        return self.gettimeout()

    def dup(self):
        """A second green socket on a dup of the fd, served by the same hub."""
        cdef GreenIO io = _io_of(self)
        fd = _os.dup(self.fileno())
        try:
            copy = fs_socket_from_fd(GreenSocket, fd, self.family, self.type, self.proto)
        except BaseException:
            _os.close(fd)
            raise
        copy._io_refs = 0
        copy._closed = False
        copy._green_io = new_io = GreenIO(io.hub, fd)
        (<GreenIO>new_io).timeout = io.timeout
        return copy

    def detach(self):
        cdef GreenIO io = self._green_io
        if io is not None:
            io.detach_from_hub()
            # Python's view of the fd (no timeout: blocking) is the truth again.
            if io.fd >= 0 and io.timeout != 0:
                compat.fs_make_blocking(io.fd)
        return _socket.socket.detach(self)

    def _real_close(self, _ss=_c_socket.socket):
        cdef GreenIO io = self._green_io
        if io is not None:
            io.detach_from_hub()
        _ss.close(self)


cdef object _GreenSocket = GreenSocket


cdef object new_green_socket(LoopPlan plan, GreenHub hub, int fd):
    """The green socket of a connection accepted non-blocking as ``fd``."""
    sock = fs_socket_from_fd(_GreenSocket, fd, plan.family_c, plan.type_c, plan.proto_c)
    try:
        sock._io_refs = 0
        sock._closed = False
        sock._green_io = GreenIO(hub, fd)
    except BaseException:
        sock.detach()
        raise
    return sock
