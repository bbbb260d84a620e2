# The poller: readiness of a few fds over epoll, kqueue or poll(2).

_BACKEND_NAMES = {"epoll": BACKEND_EPOLL, "kqueue": BACKEND_KQUEUE, "poll": BACKEND_POLL}


def native_backend():
    """The best poller this platform has."""
    if compat.FS_HAVE_EPOLL:
        return "epoll"
    if compat.FS_HAVE_KQUEUE:
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
    if ((name == "epoll" and not compat.FS_HAVE_EPOLL)
            or (name == "kqueue" and not compat.FS_HAVE_KQUEUE)):
        raise ValueError(f"poller backend {name!r} is not available on this platform")
    return name


cdef class Poller:
    """Readiness for reading of a few fds, over epoll, kqueue or poll."""

    def __cinit__(self, backend=None):
        self.pollfd_fd = -1
        self.pollfds = NULL
        self.npollfds = 0
        self.backend = choose_backend(backend)
        self.kind = _BACKEND_NAMES[self.backend]
        if self.kind == BACKEND_EPOLL:
            self.pollfd_fd = epoll.epoll_create1(epoll.EPOLL_CLOEXEC)
        elif self.kind == BACKEND_KQUEUE:
            self.pollfd_fd = kqueue.kqueue()
            if self.pollfd_fd >= 0:
                _set_cloexec_nonblock(self.pollfd_fd)
        if self.kind != BACKEND_POLL and self.pollfd_fd < 0:
            PyErr_SetFromErrno(OSError)

    def register(self, int fd):
        cdef epoll.epoll_event ev
        cdef kqueue.kevent_t change
        cdef poll.pollfd *grown
        if self.kind == BACKEND_EPOLL:
            ev.events = epoll.EPOLLIN
            ev.data.u64 = 0
            ev.data.fd = fd
            if epoll.epoll_ctl(self.pollfd_fd, epoll.EPOLL_CTL_ADD, fd, &ev) < 0:
                PyErr_SetFromErrno(OSError)
        elif self.kind == BACKEND_KQUEUE:
            kqueue.EV_SET(&change, fd, kqueue.EVFILT_READ, kqueue.EV_ADD, 0, 0, NULL)
            if kqueue.kevent(self.pollfd_fd, &change, 1, NULL, 0, NULL) < 0:
                PyErr_SetFromErrno(OSError)
        else:
            for i in range(self.npollfds):
                if self.pollfds[i].fd == fd:
                    raise FileExistsError(f"fd {fd} is already registered")
            grown = <poll.pollfd *>realloc(self.pollfds, (self.npollfds + 1) * sizeof(poll.pollfd))
            if grown == NULL:
                raise MemoryError()
            self.pollfds = grown
            self.pollfds[self.npollfds].fd = fd
            self.pollfds[self.npollfds].events = poll.POLLIN
            self.pollfds[self.npollfds].revents = 0
            self.npollfds += 1

    def unregister(self, int fd):
        """Stop watching ``fd``; a closed or unknown fd is not an error."""
        cdef epoll.epoll_event ev
        cdef kqueue.kevent_t change
        if self.kind == BACKEND_EPOLL:
            epoll.epoll_ctl(self.pollfd_fd, epoll.EPOLL_CTL_DEL, fd, &ev)
        elif self.kind == BACKEND_KQUEUE:
            kqueue.EV_SET(&change, fd, kqueue.EVFILT_READ, kqueue.EV_DELETE, 0, 0, NULL)
            kqueue.kevent(self.pollfd_fd, &change, 1, NULL, 0, NULL)
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
        cdef double deadline = compat.fs_monotonic() + timeout
        cdef int n
        while True:
            n = self._wait_once(timeout, ready, max_ready)
            if n >= 0:
                return n
            if errno.errno != errno.EINTR:
                PyErr_SetFromErrno(OSError)
            PyErr_CheckSignals()
            if timeout >= 0:
                timeout = deadline - compat.fs_monotonic()
                if timeout < 0:
                    timeout = 0

    cdef int _wait_once(self, double timeout, int *ready, int max_ready) noexcept:
        """One wait without the GIL: the count of ready fds, or -1 and errno."""
        cdef epoll.epoll_event events[MAX_EVENTS]
        cdef kqueue.kevent_t kevents[MAX_EVENTS]
        cdef time.timespec ts
        cdef int n, i, count = 0
        cdef int ms = compat.fs_timeout_ms(timeout)
        if max_ready > MAX_EVENTS:
            max_ready = MAX_EVENTS
        if self.kind == BACKEND_EPOLL:
            with nogil:
                n = epoll.epoll_wait(self.pollfd_fd, events, max_ready, ms)
            for i in range(n):
                ready[i] = events[i].data.fd
            return n
        if self.kind == BACKEND_KQUEUE:
            ts.tv_sec = <long>timeout
            ts.tv_nsec = <long>((timeout - <double>ts.tv_sec) * 1e9)
            with nogil:
                n = kqueue.kevent(self.pollfd_fd, NULL, 0, kevents, max_ready,
                                  NULL if timeout < 0 else &ts)
            for i in range(n):
                ready[i] = <int>kevents[i].ident
            return n
        with nogil:
            n = poll.poll(self.pollfds, self.npollfds, ms)
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
            unistd.close(self.pollfd_fd)
            self.pollfd_fd = -1
        free(self.pollfds)
        self.pollfds = NULL
        self.npollfds = 0

    def __dealloc__(self):
        self.close()
