# The C APIs the core uses, declared in one place.  Platform differences are
# resolved in compat.h: on a platform without epoll (or kqueue, or eventfd)
# the names still exist and FS_HAVE_* says not to call them.
from libc.stdint cimport uint32_t, uint64_t, intptr_t, uintptr_t

cdef extern from "includes/compat.h" nogil:
    const int FS_HAVE_EPOLL
    const int FS_HAVE_KQUEUE
    const int FS_HAVE_EVENTFD

    double fs_monotonic()
    int fs_timeout_ms(double seconds)

    # poll(2)
    struct pollfd:
        int fd
        short events
        short revents
    ctypedef unsigned long nfds_t
    int poll(pollfd *fds, nfds_t nfds, int timeout)
    const short POLLIN
    const short POLLERR
    const short POLLHUP
    const short POLLNVAL

    # epoll(7)
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    const uint32_t EPOLLIN
    const int EPOLL_CTL_ADD
    const int EPOLL_CTL_DEL
    const int EPOLL_CLOEXEC

    # kqueue(2)
    struct timespec:
        long tv_sec
        long tv_nsec
    # "struct kevent" and kevent() share a name in C; Cython needs two.
    struct kevent_t "kevent":
        uintptr_t ident
        short filter
        unsigned short flags
        unsigned int fflags
        intptr_t data
        void *udata
    int kqueue()
    int kevent(int kq, const kevent_t *changelist, int nchanges,
               kevent_t *eventlist, int nevents, const timespec *timeout)
    void FS_EV_SET(kevent_t *kev, uintptr_t ident, short filter, unsigned short flags,
                   unsigned int fflags, intptr_t data, void *udata)
    const short EVFILT_READ
    const unsigned short EV_ADD
    const unsigned short EV_DELETE

    # eventfd(2)
    int eventfd(unsigned int initval, int flags)
    const int EFD_CLOEXEC
    const int EFD_NONBLOCK

    # unistd / fcntl
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)
    int pipe(int fds[2])
    int fcntl(int fd, int cmd, ...)
    const int F_GETFL
    const int F_SETFL
    const int F_GETFD
    const int F_SETFD
    const int O_NONBLOCK
    const int FD_CLOEXEC

    int errno
    const int EINTR
    const int EAGAIN
    const int EWOULDBLOCK
