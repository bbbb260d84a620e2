# <sys/eventfd.h>: eventfd(2), the Linux waker.  Declared through compat.h,
# which includes the real header on Linux and stubs it elsewhere (the waker
# is a pipe there; compat.FS_HAVE_EVENTFD is 0).

cdef extern from "includes/compat.h" nogil:
    int eventfd(unsigned int initval, int flags)
    const int EFD_CLOEXEC
    const int EFD_NONBLOCK
