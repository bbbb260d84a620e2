# includes/compat.h's own definitions: the FS_* feature flags and the fs_*
# helpers, each a few system calls (or a formatting loop) the core wants as
# one inline C call.  The event APIs compat.h stands in for are declared in
# epoll.pxd, eventfd.pxd and kqueue.pxd.
from includes cimport socket

cdef extern from "includes/compat.h" nogil:
    # 1 where the platform has the API for real, 0 where compat.h stubs it.
    const int FS_LINUX
    const int FS_HAVE_EPOLL
    const int FS_HAVE_KQUEUE
    const int FS_HAVE_EVENTFD

    # Seconds on the monotonic clock; a timeout in seconds as poll/epoll
    # milliseconds, rounded up (negative: -1, forever).
    double fs_monotonic()
    int fs_timeout_ms(double seconds)

    # accept(2) with the new fd close-on-exec (accept4 where it exists), and
    # non-blocking when ``nonblocking`` (a green connection), else blocking.
    int fs_accept_cloexec(int fd, socket.sockaddr *addr, socket.socklen_t *addrlen,
                          int nonblocking)
    void fs_set_tcp_nodelay(int fd)
    # 1 if ``fd`` was blocking (the caller restores it), 0 if not, -1 on error.
    int fs_make_nonblocking(int fd)
    void fs_make_blocking(int fd)
    # inet_ntop(AF_INET) without sprintf; returns the length written.
    int fs_format_ipv4(const socket.in_addr *addr, char *out)

    # Datagrams received together: one recvmmsg(2) on Linux, one recvfrom(2)
    # elsewhere.  Datagram i is data + i * size, lengths[i] long, from
    # addrs[i] (addrlens[i] long).
    const int FS_MAX_DATAGRAM_BATCH
    ctypedef struct fs_datagram_batch:
        int capacity
        size_t size
        char *data
        socket.sockaddr_storage *addrs
        socket.socklen_t *addrlens
        size_t *lengths
    int fs_datagram_batch_init(fs_datagram_batch *b, int capacity, size_t size)
    void fs_datagram_batch_free(fs_datagram_batch *b)
    int fs_datagram_batch_recv(int fd, fs_datagram_batch *b)
