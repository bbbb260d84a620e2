# <string.h>: the byte-buffer functions of the socket files and the
# address decoder.
#
# Cython's libc/string.pxd declares ISO C's functions but not POSIX's
# strnlen.  This file passes the ones the core uses on and adds strnlen, so
# that all of <string.h> is one namespace in the core.
from libc.string cimport memchr, memcpy, memmove, memset

cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)
