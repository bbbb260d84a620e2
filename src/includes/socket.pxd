# The socket headers: <sys/socket.h>, <sys/un.h>, <netinet/in.h> and
# <arpa/inet.h>, for the core's own accept(2), recvfrom(2), recv(2) and
# send(2) and for turning socket addresses into Python objects.  Cython's
# posix/ pxds do not declare them.  Only the fields the core reads are
# declared.
from libc.stdint cimport uint32_t

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    const int AF_INET
    const int AF_INET6
    const int AF_UNIX
    const int MSG_DONTWAIT
    ssize_t recv(int fd, void *buf, size_t len, int flags)
    ssize_t send(int fd, const void *buf, size_t len, int flags)
    ssize_t recvfrom(int fd, void *buf, size_t len, int flags, sockaddr *addr, socklen_t *addrlen)

cdef extern from "includes/compat.h" nogil:
    # <sys/socket.h>'s flag that turns SIGPIPE into EPIPE, or 0 where the
    # platform has none (compat.h defines it then).
    const int MSG_NOSIGNAL

cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        sa_family_t sun_family
        char sun_path[1]

cdef extern from "<netinet/in.h>" nogil:
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
    const int INET_ADDRSTRLEN
    const int INET6_ADDRSTRLEN

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    unsigned short ntohs(unsigned short)
    uint32_t ntohl(uint32_t)
