# The C APIs the core uses, declared in one place.  Platform differences are
# resolved in compat.h: on a platform without epoll (or kqueue, or eventfd)
# the names still exist and FS_HAVE_* says not to call them.
from libc.stdint cimport uint32_t, uint64_t, intptr_t, uintptr_t

cdef extern from "includes/compat.h" nogil:
    const int FS_LINUX
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
    const short POLLOUT
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
    void *memset(void *s, int c, size_t n)
    int fcntl(int fd, int cmd, ...)
    const int F_GETFL
    const int F_SETFL
    const int F_GETFD
    const int F_SETFD
    const int O_NONBLOCK
    const int FD_CLOEXEC

    # sockets
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    struct sockaddr_un:
        sa_family_t sun_family
        char sun_path[1]
    const int AF_INET
    const int AF_INET6
    const int AF_UNIX
    const int INET_ADDRSTRLEN
    const int INET6_ADDRSTRLEN
    const int MSG_DONTWAIT
    int fs_format_ipv4(const in_addr *addr, char *out)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    unsigned short ntohs(unsigned short)
    uint32_t ntohl(uint32_t)
    size_t strnlen(const char *s, size_t maxlen)
    const int MSG_NOSIGNAL
    ssize_t recv(int fd, void *buf, size_t len, int flags)
    ssize_t send(int fd, const void *buf, size_t len, int flags)
    void *memchr(const void *s, int c, size_t n)
    void *memmove(void *dest, const void *src, size_t n)
    void *memcpy(void *dest, const void *src, size_t n)
    ssize_t recvfrom(int fd, void *buf, size_t len, int flags, sockaddr *addr, socklen_t *addrlen)
    int fs_accept_cloexec(int fd, sockaddr *addr, socklen_t *addrlen)
    void fs_set_tcp_nodelay(int fd)
    int fs_make_nonblocking(int fd)
    void fs_make_blocking(int fd)
    const int FS_MAX_DATAGRAM_BATCH
    ctypedef struct fs_datagram_batch:
        int capacity
        size_t size
        char *data
        sockaddr_storage *addrs
        socklen_t *addrlens
        size_t *lengths
    int fs_datagram_batch_init(fs_datagram_batch *b, int capacity, size_t size)
    void fs_datagram_batch_free(fs_datagram_batch *b)
    int fs_datagram_batch_recv(int fd, fs_datagram_batch *b)

    int errno
    const int EINTR
    const int EAGAIN
    const int EWOULDBLOCK
    const int EMFILE
    const int ENFILE
    const int ENOBUFS
    const int ENOMEM
    const int EBADF
    const int ENOTSOCK
