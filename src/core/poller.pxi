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

    # -- green handlers' connections: read and write readiness as edges ------

    cdef int watch(self, int fd) except -1:
        """Report ``fd``'s read and write readiness to wait_events() as
        edges: once per change (epoll's EPOLLET, kqueue's EV_CLEAR), so a
        connection stays registered from its first wait to its close at no
        cost per request, and one whose handler is busy elsewhere is never
        reported again and again.  poll(2) has no edges: there the fd is
        added disarmed, and arm() says what to wait for."""
        cdef epoll.epoll_event ev
        cdef kqueue.kevent_t changes[2]
        cdef poll.pollfd *grown
        if self.kind == BACKEND_EPOLL:
            ev.events = epoll.EPOLLIN | epoll.EPOLLOUT | epoll.EPOLLRDHUP | epoll.EPOLLET
            ev.data.u64 = 0
            ev.data.fd = fd
            if epoll.epoll_ctl(self.pollfd_fd, epoll.EPOLL_CTL_ADD, fd, &ev) < 0:
                if errno.errno != errno.EEXIST:
                    PyErr_SetFromErrno(OSError)
                # A number reused while the old file stays registered
                # (a dup of the closed socket is still open): take it over.
                if epoll.epoll_ctl(self.pollfd_fd, epoll.EPOLL_CTL_MOD, fd, &ev) < 0:
                    PyErr_SetFromErrno(OSError)
        elif self.kind == BACKEND_KQUEUE:
            kqueue.EV_SET(&changes[0], fd, kqueue.EVFILT_READ,
                          kqueue.EV_ADD | kqueue.EV_CLEAR, 0, 0, NULL)
            kqueue.EV_SET(&changes[1], fd, kqueue.EVFILT_WRITE,
                          kqueue.EV_ADD | kqueue.EV_CLEAR, 0, 0, NULL)
            if kqueue.kevent(self.pollfd_fd, changes, 2, NULL, 0, NULL) < 0:
                PyErr_SetFromErrno(OSError)
        else:
            if self._poll_slot(fd) >= 0:
                return 0
            grown = <poll.pollfd *>realloc(self.pollfds, (self.npollfds + 1) * sizeof(poll.pollfd))
            if grown == NULL:
                raise MemoryError()
            self.pollfds = grown
            self.pollfds[self.npollfds].fd = -fd - 1  # negative: poll(2) skips it
            self.pollfds[self.npollfds].events = 0
            self.pollfds[self.npollfds].revents = 0
            self.npollfds += 1
        return 0

    cdef int arm(self, int fd, int events) except -1:
        """poll(2) only: report ``fd`` when READY_READ/READY_WRITE (or both)
        until disarm().  The edge backends report every change anyway."""
        cdef Py_ssize_t i
        if self.kind != BACKEND_POLL:
            return 0
        i = self._poll_slot(fd)
        if i >= 0:
            self.pollfds[i].fd = fd
            self.pollfds[i].events = ((poll.POLLIN if events & READY_READ else 0)
                                      | (poll.POLLOUT if events & READY_WRITE else 0))
        return 0

    cdef void disarm(self, int fd) noexcept:
        cdef Py_ssize_t i
        if self.kind != BACKEND_POLL:
            return
        i = self._poll_slot(fd)
        if i >= 0:
            self.pollfds[i].fd = -fd - 1
            self.pollfds[i].events = 0

    cdef void forget(self, int fd) noexcept:
        """Stop reporting a watched ``fd`` (before it closes: a dup of it
        would keep an epoll registration alive)."""
        cdef epoll.epoll_event ev
        cdef kqueue.kevent_t changes[2]
        cdef Py_ssize_t i
        if self.kind == BACKEND_EPOLL:
            epoll.epoll_ctl(self.pollfd_fd, epoll.EPOLL_CTL_DEL, fd, &ev)
        elif self.kind == BACKEND_KQUEUE:
            kqueue.EV_SET(&changes[0], fd, kqueue.EVFILT_READ, kqueue.EV_DELETE, 0, 0, NULL)
            kqueue.EV_SET(&changes[1], fd, kqueue.EVFILT_WRITE, kqueue.EV_DELETE, 0, 0, NULL)
            kqueue.kevent(self.pollfd_fd, changes, 2, NULL, 0, NULL)
        else:
            i = self._poll_slot(fd)
            if i >= 0:
                self.npollfds -= 1
                self.pollfds[i] = self.pollfds[self.npollfds]

    cdef Py_ssize_t _poll_slot(self, int fd) noexcept:
        """The poll backend's entry for a watched ``fd`` (armed or not), or -1."""
        cdef Py_ssize_t i
        for i in range(self.npollfds):
            if self.pollfds[i].fd == fd or self.pollfds[i].fd == -fd - 1:
                return i
        return -1

    cdef int wait_events(self, double timeout, int *fds, int *events, int max_ready) except -1:
        """wait_fds() with what each fd is ready for: READY_READ and/or
        READY_WRITE (an error or hang-up is both: the next call tells), and
        READY_HANGUP when the peer has shut down or the socket has an error:
        a state, not a change, which an edge reports only once."""
        cdef double deadline = compat.fs_monotonic() + timeout
        cdef int n
        while True:
            n = self._wait_events_once(timeout, fds, events, max_ready)
            if n >= 0:
                return n
            if errno.errno != errno.EINTR:
                PyErr_SetFromErrno(OSError)
            PyErr_CheckSignals()
            if timeout >= 0:
                timeout = deadline - compat.fs_monotonic()
                if timeout < 0:
                    timeout = 0

    cdef int _wait_events_once(self, double timeout, int *fds, int *events,
                               int max_ready) noexcept:
        cdef epoll.epoll_event ep[GREEN_MAX_EVENTS]
        cdef kqueue.kevent_t kev[GREEN_MAX_EVENTS]
        cdef time.timespec ts
        cdef int n, i, count = 0
        cdef unsigned int flags
        cdef int ms = compat.fs_timeout_ms(timeout)
        if max_ready > GREEN_MAX_EVENTS:
            max_ready = GREEN_MAX_EVENTS
        if self.kind == BACKEND_EPOLL:
            with nogil:
                n = epoll.epoll_wait(self.pollfd_fd, ep, max_ready, ms)
            for i in range(n):
                fds[i] = ep[i].data.fd
                flags = ep[i].events
                if flags & (epoll.EPOLLERR | epoll.EPOLLHUP):
                    events[i] = READY_READ | READY_WRITE | READY_HANGUP
                else:
                    events[i] = ((READY_READ if flags & epoll.EPOLLIN else 0)
                                 | (READY_READ | READY_HANGUP if flags & epoll.EPOLLRDHUP else 0)
                                 | (READY_WRITE if flags & epoll.EPOLLOUT else 0))
            return n
        if self.kind == BACKEND_KQUEUE:
            ts.tv_sec = <long>timeout
            ts.tv_nsec = <long>((timeout - <double>ts.tv_sec) * 1e9)
            with nogil:
                n = kqueue.kevent(self.pollfd_fd, NULL, 0, kev, max_ready,
                                  NULL if timeout < 0 else &ts)
            for i in range(n):
                fds[i] = <int>kev[i].ident
                events[i] = ((READY_WRITE if kev[i].filter == kqueue.EVFILT_WRITE else READY_READ)
                             | (READY_HANGUP if kev[i].flags & kqueue.EV_EOF else 0))
            return n
        with nogil:
            n = poll.poll(self.pollfds, self.npollfds, ms)
        if n <= 0:
            return n
        for i in range(self.npollfds):
            flags = <unsigned short>self.pollfds[i].revents
            if flags and count < max_ready:
                fds[count] = self.pollfds[i].fd
                if flags & (poll.POLLERR | poll.POLLHUP | poll.POLLNVAL):
                    events[count] = READY_READ | READY_WRITE | READY_HANGUP
                else:
                    events[count] = ((READY_READ if flags & poll.POLLIN else 0)
                                     | (READY_WRITE if flags & poll.POLLOUT else 0))
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
