# The waker: a wake-up fd that makes a waiting loop return at once.

cdef int _set_cloexec_nonblock(int fd) except -1:
    if fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | fcntl.O_NONBLOCK) < 0:
        PyErr_SetFromErrno(OSError)
    if fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC) < 0:
        PyErr_SetFromErrno(OSError)
    return 0


cdef class Waker:
    """A wake-up fd: an eventfd on Linux, a self-pipe elsewhere.

    ``wake()`` and ``close()`` hold the waker's lock (the GIL is not enough
    on free-threaded Python): once closed, the fd number may belong to
    someone else and must never be written.  The write never blocks (the
    fd is non-blocking), so the lock is held for a moment only.
    """

    def __cinit__(self):
        cdef int fds[2]
        self.read_fd = self.write_fd = -1
        if compat.FS_HAVE_EVENTFD:
            self.read_fd = eventfd.eventfd(0, eventfd.EFD_CLOEXEC | eventfd.EFD_NONBLOCK)
            if self.read_fd < 0:
                PyErr_SetFromErrno(OSError)
            self.write_fd = self.read_fd
        else:
            if unistd.pipe(fds) < 0:
                PyErr_SetFromErrno(OSError)
            self.read_fd, self.write_fd = fds[0], fds[1]
            _set_cloexec_nonblock(self.read_fd)
            _set_cloexec_nonblock(self.write_fd)

    def fileno(self):
        return self.read_fd

    def wake(self):
        cdef uint64_t one = 1
        with self.lock:
            if self.write_fd >= 0:
                # EAGAIN means wake-ups are already pending: nothing is lost.
                unistd.write(self.write_fd, &one, sizeof(one) if compat.FS_HAVE_EVENTFD else 1)

    def drain(self):
        self._drain()

    cdef void _drain(self) noexcept:
        cdef char buf[64]
        if self.read_fd < 0:
            return
        while unistd.read(self.read_fd, buf, sizeof(buf)) == sizeof(buf):
            pass

    def close(self):
        with self.lock:
            if self.read_fd >= 0:
                unistd.close(self.read_fd)
                if self.write_fd != self.read_fd:
                    unistd.close(self.write_fd)
            self.read_fd = self.write_fd = -1

    def __dealloc__(self):
        self.close()
