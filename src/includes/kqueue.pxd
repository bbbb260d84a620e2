# <sys/event.h>: kqueue(2), the macOS/BSD poller backend.  Declared through
# compat.h, which includes the real header where kqueue exists and stubs it
# elsewhere (calls fail with ENOSYS; compat.FS_HAVE_KQUEUE is 0 there).
from libc.stdint cimport intptr_t, uintptr_t
from libc.time cimport timespec

cdef extern from "includes/compat.h" nogil:
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
    # EV_SET is a macro; compat.h's FS_EV_SET is it, or its stand-in where
    # <sys/event.h> does not exist.
    void EV_SET "FS_EV_SET"(kevent_t *kev, uintptr_t ident, short filter,
                            unsigned short flags, unsigned int fflags, intptr_t data,
                            void *udata)
    const short EVFILT_READ
    const short EVFILT_WRITE
    const unsigned short EV_ADD
    const unsigned short EV_DELETE
    const unsigned short EV_CLEAR
    const unsigned short EV_EOF
