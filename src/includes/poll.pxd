# <poll.h>: poll(2), the portable poller backend, and the one-fd waits of
# the serve loop and the socket files (every POSIX system has it; Cython's
# posix/ pxds do not declare it).

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    ctypedef unsigned long nfds_t
    int poll(pollfd *fds, nfds_t nfds, int timeout)
    const short POLLIN
    const short POLLOUT
    const short POLLERR
    const short POLLHUP
    const short POLLNVAL
