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
#  define EPOLLERR 0x008
#  define EPOLLHUP 0x010
#  define EPOLL_CTL_ADD 1
#  define EPOLL_CTL_DEL 2
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
#  define EV_ADD 0x0001
#  define EV_DELETE 0x0002
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
#include <arpa/inet.h>

/* accept(2) with the new fd close-on-exec, as Python's socket.accept()
 * makes it: atomically where accept4() exists, else in two steps. */
static inline int fs_accept_cloexec(int fd, struct sockaddr *addr, socklen_t *len)
{
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
    return accept4(fd, addr, len, SOCK_CLOEXEC);
#else
    int conn = accept(fd, addr, len);
    if (conn >= 0) {
        int flags = fcntl(conn, F_GETFD);
        if (flags >= 0) fcntl(conn, F_SETFD, flags | FD_CLOEXEC);
        /* BSD-derived stacks (macOS) hand the listener's O_NONBLOCK down to
         * accepted sockets; a Python socket with no timeout must block. */
        flags = fcntl(conn, F_GETFL);
        if (flags >= 0 && (flags & O_NONBLOCK)) fcntl(conn, F_SETFL, flags & ~O_NONBLOCK);
    }
    return conn;
#endif
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
