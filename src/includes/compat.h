/* Platform shims for the compiled core.
 *
 * The core is written once against epoll, kqueue, eventfd and poll.  This
 * header says which of them the platform really has (FS_HAVE_*), and where
 * one is missing it declares just enough (types, constants, functions that
 * fail with ENOSYS) for the code to compile; the core never calls them
 * there because it checks FS_HAVE_* first.
 */
#ifndef FASTSERVER_COMPAT_H
#define FASTSERVER_COMPAT_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#  define FS_LINUX 1
#  define FS_HAVE_EPOLL 1
#  define FS_HAVE_EVENTFD 1
#  include <sys/epoll.h>
#  include <sys/eventfd.h>
#else
#  define FS_LINUX 0
#  define FS_HAVE_EPOLL 0
#  define FS_HAVE_EVENTFD 0
typedef union epoll_data { void *ptr; int fd; uint32_t u32; uint64_t u64; } epoll_data_t;
struct epoll_event { uint32_t events; epoll_data_t data; };
#  define EPOLLIN 0x001
#  define EPOLLOUT 0x004
#  define EPOLLRDHUP 0x2000
#  define EPOLLET (1u << 31)
#  define EPOLLERR 0x008
#  define EPOLLHUP 0x010
#  define EPOLL_CTL_ADD 1
#  define EPOLL_CTL_DEL 2
#  define EPOLL_CTL_MOD 3
#  define EPOLL_CLOEXEC 02000000
#  define EFD_CLOEXEC 02000000
#  define EFD_NONBLOCK 04000
static inline int epoll_create1(int flags) { (void)flags; errno = ENOSYS; return -1; }
static inline int epoll_ctl(int e, int op, int fd, struct epoll_event *ev)
{ (void)e; (void)op; (void)fd; (void)ev; errno = ENOSYS; return -1; }
static inline int epoll_wait(int e, struct epoll_event *evs, int n, int ms)
{ (void)e; (void)evs; (void)n; (void)ms; errno = ENOSYS; return -1; }
static inline int eventfd(unsigned int v, int flags) { (void)v; (void)flags; errno = ENOSYS; return -1; }
#endif

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__)
#  define FS_HAVE_KQUEUE 1
#  include <sys/types.h>
#  include <sys/event.h>
#  include <sys/time.h>
#  define FS_EV_SET EV_SET
#else
#  define FS_HAVE_KQUEUE 0
struct kevent {
    uintptr_t ident; short filter; unsigned short flags;
    unsigned int fflags; intptr_t data; void *udata;
};
#  define EVFILT_READ (-1)
#  define EVFILT_WRITE (-2)
#  define EV_ADD 0x0001
#  define EV_DELETE 0x0002
#  define EV_CLEAR 0x0020
#  define EV_EOF 0x8000
#  define EV_ERROR 0x4000
static inline int kqueue(void) { errno = ENOSYS; return -1; }
static inline int kevent(int kq, const struct kevent *changes, int nchanges,
                         struct kevent *events, int nevents, const struct timespec *timeout)
{ (void)kq; (void)changes; (void)nchanges; (void)events; (void)nevents; (void)timeout;
  errno = ENOSYS; return -1; }
#  define FS_EV_SET(kevp, a, b, c, d, e, f) do { \
    (kevp)->ident = (a); (kevp)->filter = (b); (kevp)->flags = (c); \
    (kevp)->fflags = (d); (kevp)->data = (e); (kevp)->udata = (f); } while (0)
#endif

#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

/* accept(2) with the new fd close-on-exec, as Python's socket.accept()
 * makes it: atomically where accept4() exists, else in two steps.  The
 * connection is blocking (Python's view of a socket with no timeout), or
 * non-blocking when asked (a green connection, which waits in the loop). */
static inline int fs_accept_cloexec(int fd, struct sockaddr *addr, socklen_t *len,
                                    int nonblocking)
{
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
    return accept4(fd, addr, len, SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0));
#else
    int conn = accept(fd, addr, len);
    if (conn >= 0) {
        int flags = fcntl(conn, F_GETFD);
        if (flags >= 0) fcntl(conn, F_SETFD, flags | FD_CLOEXEC);
        /* BSD-derived stacks (macOS) hand the listener's O_NONBLOCK down to
         * accepted sockets: set the flag to what is asked, either way. */
        flags = fcntl(conn, F_GETFL);
        if (flags >= 0 && !(flags & O_NONBLOCK) != !nonblocking)
            fcntl(conn, F_SETFL, nonblocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
    }
    return conn;
#endif
}

/* Nagle off on an accepted TCP connection.  A failure is not the client's
 * problem and changes nothing the handler can see: ignored, as asyncio does. */
static inline void fs_set_tcp_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Put ``fd`` in non-blocking mode; returns 1 if it was blocking before (so
 * the caller restores it), 0 if it already was non-blocking, -1 on error. */
static inline int fs_make_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    if (flags & O_NONBLOCK) return 0;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ? -1 : 1;
}

static inline void fs_make_blocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK)) (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

/* The dotted quad of an IPv4 address, as inet_ntop() writes it, without
 * going through sprintf (which made up a tenth of the accept path's
 * instructions).  ``out`` holds at least 16 bytes; returns the length. */
static inline int fs_format_ipv4(const struct in_addr *addr, char *out)
{
    const unsigned char *octet = (const unsigned char *)&addr->s_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned int v = octet[i];
        if (v >= 100) { *p++ = (char)('0' + v / 100); v %= 100; *p++ = (char)('0' + v / 10); v %= 10; }
        else if (v >= 10) { *p++ = (char)('0' + v / 10); v %= 10; }
        *p++ = (char)('0' + v);
        if (i < 3) *p++ = '.';
    }
    *p = '\0';
    return (int)(p - out);
}

/* A batch of datagrams received together without waiting: one
 * recvmmsg(2) on Linux, one recvfrom(2) elsewhere.  Datagram i lands in
 * data + i * size (truncated to ``size`` bytes, as recvfrom truncates),
 * with its length in lengths[i] and its sender in addrs[i] / addrlens[i].
 * The message headers are set up once, not per call. */
#define FS_MAX_DATAGRAM_BATCH 32

typedef struct {
    int capacity;
    size_t size;
    char *data;
    struct sockaddr_storage *addrs;
    socklen_t *addrlens;
    size_t *lengths;
#if defined(__linux__)
    struct mmsghdr *msgs;
    struct iovec *iovs;
#endif
} fs_datagram_batch;

static inline void fs_datagram_batch_free(fs_datagram_batch *b)
{
    free(b->data); free(b->addrs); free(b->addrlens); free(b->lengths);
    b->data = NULL; b->addrs = NULL; b->addrlens = NULL; b->lengths = NULL;
#if defined(__linux__)
    free(b->msgs); free(b->iovs);
    b->msgs = NULL; b->iovs = NULL;
#endif
}

/* 0, or -1 when out of memory (``b`` is then freed). */
static inline int fs_datagram_batch_init(fs_datagram_batch *b, int capacity, size_t size)
{
    memset(b, 0, sizeof(*b));
    if (capacity < 1) capacity = 1;
    if (capacity > FS_MAX_DATAGRAM_BATCH) capacity = FS_MAX_DATAGRAM_BATCH;
#if !defined(__linux__)
    capacity = 1;
#endif
    b->capacity = capacity;
    b->size = size;
    b->data = malloc((size_t)capacity * size + 1);
    b->addrs = calloc((size_t)capacity, sizeof(*b->addrs));
    b->addrlens = calloc((size_t)capacity, sizeof(*b->addrlens));
    b->lengths = calloc((size_t)capacity, sizeof(*b->lengths));
    int ok = b->data && b->addrs && b->addrlens && b->lengths;
#if defined(__linux__)
    b->msgs = calloc((size_t)capacity, sizeof(*b->msgs));
    b->iovs = calloc((size_t)capacity, sizeof(*b->iovs));
    ok = ok && b->msgs && b->iovs;
    for (int i = 0; ok && i < capacity; i++) {
        b->iovs[i].iov_base = b->data + (size_t)i * size;
        b->iovs[i].iov_len = size;
        b->msgs[i].msg_hdr.msg_iov = &b->iovs[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
        b->msgs[i].msg_hdr.msg_name = &b->addrs[i];
    }
#endif
    if (!ok) {
        fs_datagram_batch_free(b);
        return -1;
    }
    return 0;
}

/* How many datagrams were received (at least 1), or -1 with errno set
 * (EAGAIN: none waiting). */
static inline int fs_datagram_batch_recv(int fd, fs_datagram_batch *b)
{
#if defined(__linux__)
    for (int i = 0; i < b->capacity; i++)
        b->msgs[i].msg_hdr.msg_namelen = sizeof(b->addrs[i]);  /* the kernel overwrites it */
    int n = recvmmsg(fd, b->msgs, (unsigned int)b->capacity, MSG_DONTWAIT, NULL);
    for (int i = 0; i < n; i++) {
        b->lengths[i] = b->msgs[i].msg_len;
        b->addrlens[i] = b->msgs[i].msg_hdr.msg_namelen;
    }
    return n;
#else
    b->addrlens[0] = sizeof(b->addrs[0]);
    ssize_t n = recvfrom(fd, b->data, b->size, MSG_DONTWAIT,
                         (struct sockaddr *)&b->addrs[0], &b->addrlens[0]);
    if (n < 0) return -1;
    b->lengths[0] = (size_t)n;
    return 1;
#endif
}

/* send(2) flag that turns SIGPIPE into EPIPE where the platform has it
 * (Python ignores SIGPIPE anyway; an embedding application may not). */
#ifndef MSG_NOSIGNAL
#  define MSG_NOSIGNAL 0
#endif

/* Seconds on the monotonic clock (the clock time.monotonic() reads). */
static inline double fs_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A timeout in seconds (negative: forever) as poll/epoll milliseconds,
 * rounded up so that a wait never ends before its deadline and spins. */
static inline int fs_timeout_ms(double seconds)
{
    if (seconds < 0) return -1;
    double ms = seconds * 1000.0;
    if (ms >= 2147483647.0) return 2147483647;
    int whole = (int)ms;
    return (ms > (double)whole) ? whole + 1 : whole;
}

#endif /* FASTSERVER_COMPAT_H */
