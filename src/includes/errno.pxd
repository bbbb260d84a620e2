# <errno.h>: errno and the error codes the core tells apart.
#
# Declared here rather than cimported from Cython's libc/errno.pxd: that
# file lacks EWOULDBLOCK (POSIX's, not ISO C's), and it declares the codes
# as an enum, which makes Cython compile ``err == EMFILE or err == ENFILE``
# into a switch and convert a code to Python through an enum helper.  As
# const int they compile to the plain comparisons they always did.

cdef extern from "<errno.h>" nogil:
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
    const int EEXIST
