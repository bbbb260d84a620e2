# The C declarations of the compiled core, one .pxd per C header (or family
# of headers), cimported as namespaces so that every C name in the core says
# where it comes from: ``from includes cimport epoll`` then
# ``epoll.epoll_wait(...)``.  Headers that Cython's own libc/ and posix/
# pxds cover completely are cimported from there instead (posix.unistd,
# posix.fcntl, libc.time).
#
# compat.h resolves the platform differences: the event APIs a platform
# lacks (epoll, eventfd, kqueue) are declared there as stubs that fail with
# ENOSYS, so every .pxd here compiles everywhere and the core checks
# compat.FS_HAVE_* before calling them.
