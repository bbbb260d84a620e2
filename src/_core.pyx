# cython: language_level=3
"""fastserver's compiled core: the poller, the waker and the serve loop.

The pure-Python twin, ``fastserver/_core_py.py``, has the same interface
and behaviour; ``fastserver/_engine.py`` documents that interface and picks
one.  Python-visible behaviour (the hooks and their order) is decided in the
Python layer; this module only waits and dispatches.  Every blocking system
call runs without the GIL.
"""
import errno as _errno
import os as _os

from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.stdlib cimport malloc, realloc, free

from includes.system cimport *

#: Requests handled per readiness before the loop waits again.
DRAIN_BATCH = 64
cdef int _DRAIN_BATCH = DRAIN_BATCH

#: get_request() errors that mean "out of a resource": the loop pauses
#: accepting for BACKOFF_MIN doubling to BACKOFF_MAX seconds (see _core_py).
RESOURCE_ERRNOS = frozenset((_errno.EMFILE, _errno.ENFILE, _errno.ENOBUFS, _errno.ENOMEM))
BACKOFF_MIN = 0.005
BACKOFF_MAX = 0.1
_LISTENER_GONE_ERRNOS = frozenset((_errno.EBADF, _errno.ENOTSOCK))

# What handle_request_noblock() tells the loop about the listener.
HANDLED = 0
BACK_OFF = 1
LISTENER_CLOSED = 2

cdef enum Backend:
    BACKEND_EPOLL
    BACKEND_KQUEUE
    BACKEND_POLL

_BACKEND_NAMES = {"epoll": BACKEND_EPOLL, "kqueue": BACKEND_KQUEUE, "poll": BACKEND_POLL}

# Most fds one wait reports; the loop registers two (listener and waker).
DEF MAX_EVENTS = 8


def native_backend():
    """The best poller this platform has."""
    if FS_HAVE_EPOLL:
        return "epoll"
    if FS_HAVE_KQUEUE:
        return "kqueue"
    return "poll"


def choose_backend(backend=None):
    """``backend``, else ``$FASTSERVER_POLLER``, else the native one."""
    name = backend or _os.environ.get("FASTSERVER_POLLER") or native_backend()
    if name not in _BACKEND_NAMES:
        raise ValueError(
            f"unknown poller backend {name!r}: choose one of "
            f"{', '.join(sorted(_BACKEND_NAMES))}"
        )
    if (name == "epoll" and not FS_HAVE_EPOLL) or (name == "kqueue" and not FS_HAVE_KQUEUE):
        raise ValueError(f"poller backend {name!r} is not available on this platform")
    return name


cdef int _set_cloexec_nonblock(int fd) except -1:
    if fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0:
        PyErr_SetFromErrno(OSError)
    if fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC) < 0:
        PyErr_SetFromErrno(OSError)
    return 0


cdef class Waker:
    """A wake-up fd: an eventfd on Linux, a self-pipe elsewhere.

    ``wake()`` keeps the GIL so that it cannot race ``close()``: once closed,
    the fd number may belong to someone else and must never be written.
    """
    cdef int read_fd
    cdef int write_fd

    def __cinit__(self):
        cdef int fds[2]
        self.read_fd = self.write_fd = -1
        if FS_HAVE_EVENTFD:
            self.read_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
            if self.read_fd < 0:
                PyErr_SetFromErrno(OSError)
            self.write_fd = self.read_fd
        else:
            if pipe(fds) < 0:
                PyErr_SetFromErrno(OSError)
            self.read_fd, self.write_fd = fds[0], fds[1]
            _set_cloexec_nonblock(self.read_fd)
            _set_cloexec_nonblock(self.write_fd)

    def fileno(self):
        return self.read_fd

    def wake(self):
        cdef uint64_t one = 1
        if self.write_fd >= 0:
            # EAGAIN means wake-ups are already pending: nothing is lost.
            write(self.write_fd, &one, sizeof(one) if FS_HAVE_EVENTFD else 1)

    def drain(self):
        self._drain()

    cdef void _drain(self) noexcept:
        cdef char buf[64]
        if self.read_fd < 0:
            return
        while read(self.read_fd, buf, sizeof(buf)) == sizeof(buf):
            pass

    def close(self):
        if self.read_fd >= 0:
            close(self.read_fd)
            if self.write_fd != self.read_fd:
                close(self.write_fd)
        self.read_fd = self.write_fd = -1

    def __dealloc__(self):
        self.close()


cdef class Poller:
    """Readiness for reading of a few fds, over epoll, kqueue or poll."""
    cdef Backend kind
    cdef int pollfd_fd          # the epoll or kqueue fd; -1 for poll
    cdef pollfd *pollfds        # the poll backend's set
    cdef int npollfds
    cdef readonly str backend

    def __cinit__(self, backend=None):
        self.pollfd_fd = -1
        self.pollfds = NULL
        self.npollfds = 0
        self.backend = choose_backend(backend)
        self.kind = _BACKEND_NAMES[self.backend]
        if self.kind == BACKEND_EPOLL:
            self.pollfd_fd = epoll_create1(EPOLL_CLOEXEC)
        elif self.kind == BACKEND_KQUEUE:
            self.pollfd_fd = kqueue()
            if self.pollfd_fd >= 0:
                _set_cloexec_nonblock(self.pollfd_fd)
        if self.kind != BACKEND_POLL and self.pollfd_fd < 0:
            PyErr_SetFromErrno(OSError)

    def register(self, int fd):
        cdef epoll_event ev
        cdef kevent_t change
        cdef pollfd *grown
        if self.kind == BACKEND_EPOLL:
            ev.events = EPOLLIN
            ev.data.u64 = 0
            ev.data.fd = fd
            if epoll_ctl(self.pollfd_fd, EPOLL_CTL_ADD, fd, &ev) < 0:
                PyErr_SetFromErrno(OSError)
        elif self.kind == BACKEND_KQUEUE:
            FS_EV_SET(&change, fd, EVFILT_READ, EV_ADD, 0, 0, NULL)
            if kevent(self.pollfd_fd, &change, 1, NULL, 0, NULL) < 0:
                PyErr_SetFromErrno(OSError)
        else:
            for i in range(self.npollfds):
                if self.pollfds[i].fd == fd:
                    raise FileExistsError(f"fd {fd} is already registered")
            grown = <pollfd *>realloc(self.pollfds, (self.npollfds + 1) * sizeof(pollfd))
            if grown == NULL:
                raise MemoryError()
            self.pollfds = grown
            self.pollfds[self.npollfds].fd = fd
            self.pollfds[self.npollfds].events = POLLIN
            self.pollfds[self.npollfds].revents = 0
            self.npollfds += 1

    def unregister(self, int fd):
        """Stop watching ``fd``; a closed or unknown fd is not an error."""
        cdef epoll_event ev
        cdef kevent_t change
        if self.kind == BACKEND_EPOLL:
            epoll_ctl(self.pollfd_fd, EPOLL_CTL_DEL, fd, &ev)
        elif self.kind == BACKEND_KQUEUE:
            FS_EV_SET(&change, fd, EVFILT_READ, EV_DELETE, 0, 0, NULL)
            kevent(self.pollfd_fd, &change, 1, NULL, 0, NULL)
        else:
            for i in range(self.npollfds):
                if self.pollfds[i].fd == fd:
                    self.npollfds -= 1
                    self.pollfds[i] = self.pollfds[self.npollfds]
                    break

    def wait(self, timeout):
        """The ready fds; ``timeout`` in seconds, None waits forever."""
        cdef int ready[MAX_EVENTS]
        cdef int n = self.wait_fds(-1.0 if timeout is None else max(0.0, timeout),
                                   ready, MAX_EVENTS)
        return [ready[i] for i in range(n)]

    cdef int wait_fds(self, double timeout, int *ready, int max_ready) except -1:
        """Wait up to ``timeout`` seconds (negative: forever) and store up to
        ``max_ready`` ready fds.  EINTR runs the signal handlers (which may
        raise, as Ctrl-C does) and waits again for what is left."""
        cdef double deadline = fs_monotonic() + timeout
        cdef int n
        while True:
            n = self._wait_once(timeout, ready, max_ready)
            if n >= 0:
                return n
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)
            PyErr_CheckSignals()
            if timeout >= 0:
                timeout = deadline - fs_monotonic()
                if timeout < 0:
                    timeout = 0

    cdef int _wait_once(self, double timeout, int *ready, int max_ready) noexcept:
        """One wait without the GIL: the count of ready fds, or -1 and errno."""
        cdef epoll_event events[MAX_EVENTS]
        cdef kevent_t kevents[MAX_EVENTS]
        cdef timespec ts
        cdef int n, i, count = 0
        cdef int ms = fs_timeout_ms(timeout)
        if max_ready > MAX_EVENTS:
            max_ready = MAX_EVENTS
        if self.kind == BACKEND_EPOLL:
            with nogil:
                n = epoll_wait(self.pollfd_fd, events, max_ready, ms)
            for i in range(n):
                ready[i] = events[i].data.fd
            return n
        if self.kind == BACKEND_KQUEUE:
            ts.tv_sec = <long>timeout
            ts.tv_nsec = <long>((timeout - <double>ts.tv_sec) * 1e9)
            with nogil:
                n = kevent(self.pollfd_fd, NULL, 0, kevents, max_ready,
                           NULL if timeout < 0 else &ts)
            for i in range(n):
                ready[i] = <int>kevents[i].ident
            return n
        with nogil:
            n = poll(self.pollfds, self.npollfds, ms)
        if n <= 0:
            return n
        for i in range(self.npollfds):
            # POLLNVAL (a closed fd) counts as ready, as in selectors: the
            # loop then learns from the failed accept that it is closed.
            if self.pollfds[i].revents and count < max_ready:
                ready[count] = self.pollfds[i].fd
                count += 1
        return count

    def close(self):
        if self.pollfd_fd >= 0:
            close(self.pollfd_fd)
            self.pollfd_fd = -1
        free(self.pollfds)
        self.pollfds = NULL
        self.npollfds = 0

    def __dealloc__(self):
        self.close()


cdef bint _readable_now(int fd) except -1:
    """Is ``fd`` readable right now?  One poll(2) with a zero timeout."""
    cdef pollfd p
    cdef int n
    p.fd = fd
    p.events = POLLIN
    p.revents = 0
    while True:
        n = poll(&p, 1, 0)
        if n >= 0:
            return n > 0
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()


def wait_readable(int fd, timeout):
    """Wait for one fd: True when readable (or in error), False on timeout."""
    cdef pollfd p
    cdef int n
    cdef double remaining = -1.0 if timeout is None else max(0.0, timeout)
    cdef double deadline = fs_monotonic() + remaining
    cdef int ms
    p.fd = fd
    p.events = POLLIN
    while True:
        p.revents = 0
        ms = fs_timeout_ms(remaining)
        with nogil:
            n = poll(&p, 1, ms)
        if n >= 0:
            return n > 0
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()
        if remaining >= 0:
            remaining = deadline - fs_monotonic()
            if remaining < 0:
                remaining = 0


cpdef int handle_request_noblock(server) except -1:
    """The stdlib's ``BaseServer._handle_request_noblock`` chain.

    Returns HANDLED, or what a failed ``get_request()`` says of the listener:
    the stdlib ignores every OSError there, and so do we, but a loop that
    retried at once would spin.
    """
    try:
        request, client_address = server.get_request()
    except OSError as exc:
        if exc.errno in RESOURCE_ERRNOS:
            return BACK_OFF
        if exc.errno in _LISTENER_GONE_ERRNOS:
            return LISTENER_CLOSED
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


cdef inline bint _shutdown_requested(server) except -1:
    return server._BaseServer__shutdown_request


def serve_forever(server, poll_interval, Waker waker not None, handle_one):
    """Serve until ``server.shutdown()``: the loop of ``BaseServer.serve_forever``.

    Each wake-up drains up to DRAIN_BATCH ready requests, then runs
    ``service_actions()``; the drain also stops once ``poll_interval`` has
    passed, so ``service_actions()`` runs at least that often.
    ``handle_one`` replaces the request chain when the user overrode
    ``_handle_request_noblock``.
    """
    cdef int listen_fd = server.fileno()
    cdef int wake_fd = waker.read_fd
    cdef double interval = -1.0 if poll_interval is None else max(0.0, poll_interval)
    cdef double timeout, drain_deadline, backoff = 0.0, resume_at = 0.0
    cdef bint listening = True, listener_ready, closed_for_good = False
    cdef int ready[MAX_EVENTS]
    cdef int n, i, handled, status
    cdef Poller poller = Poller()
    try:
        poller.register(listen_fd)
        poller.register(wake_fd)
        while not _shutdown_requested(server):
            timeout = interval
            if not listening and not closed_for_good:
                timeout = resume_at - fs_monotonic()
                if timeout < 0:
                    timeout = 0
                if interval >= 0 and interval < timeout:
                    timeout = interval
            n = poller.wait_fds(timeout, ready, MAX_EVENTS)
            if _shutdown_requested(server):
                break
            listener_ready = False
            for i in range(n):
                if ready[i] == wake_fd:
                    waker._drain()
                elif ready[i] == listen_fd:
                    listener_ready = listening
            if not listening and not closed_for_good and fs_monotonic() >= resume_at:
                poller.register(listen_fd)
                listening = True
                listener_ready = True  # try again at once: the clients are waiting
            if listener_ready:
                drain_deadline = fs_monotonic() + interval
                handled = 0
                while True:
                    if handle_one is None:
                        status = handle_request_noblock(server)
                    else:
                        handle_one()
                        status = HANDLED
                    handled += 1
                    if status != HANDLED:
                        poller.unregister(listen_fd)
                        listening = False
                        if status == BACK_OFF:
                            backoff = backoff * 2
                            if backoff < BACKOFF_MIN:
                                backoff = BACKOFF_MIN
                            if backoff > BACKOFF_MAX:
                                backoff = BACKOFF_MAX
                            resume_at = fs_monotonic() + backoff
                        else:  # closed: wait for the waker alone until shutdown()
                            closed_for_good = True
                        break
                    backoff = 0.0
                    if (handled >= _DRAIN_BATCH
                            or _shutdown_requested(server)
                            or (interval >= 0 and fs_monotonic() >= drain_deadline)
                            or not _readable_now(listen_fd)):
                        break
            server.service_actions()
    finally:
        poller.close()
