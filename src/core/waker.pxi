# The waker: a wake-up fd that makes a waiting loop return at once.

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
