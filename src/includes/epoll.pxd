# <sys/epoll.h>: epoll(7), the Linux poller backend.  Declared through
# compat.h, which includes the real header on Linux and stubs it elsewhere
# (calls fail with ENOSYS; compat.FS_HAVE_EPOLL is 0 there).
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "includes/compat.h" nogil:
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
    const uint32_t EPOLLOUT
    const uint32_t EPOLLERR
    const uint32_t EPOLLHUP
    const uint32_t EPOLLRDHUP
    const uint32_t EPOLLET
    const int EPOLL_CTL_ADD
    const int EPOLL_CTL_DEL
    const int EPOLL_CTL_MOD
    const int EPOLL_CLOEXEC
