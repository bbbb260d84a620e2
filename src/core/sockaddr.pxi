# Taking requests off the listening socket without Python's socket methods:
# accept(2) for streams, recvfrom(2) for datagrams.  The objects made here
# are the ones Python's socket.accept() and socket.recvfrom() return.

cdef object make_sockaddr(sockaddr *addr, socklen_t addrlen):
    """A socket address as Python's socket module gives it (makesockaddr)."""
    cdef char text[64]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    cdef sockaddr_un *unix_addr
    cdef Py_ssize_t path_len
    cdef int length
    if addrlen == 0:
        return None
    if addr.sa_family == AF_INET:
        v4 = <sockaddr_in *>addr
        length = fs_format_ipv4(&v4.sin_addr, text)
        return (PyUnicode_DecodeASCII(text, length, NULL), ntohs(v4.sin_port))
    if addr.sa_family == AF_INET6:
        v6 = <sockaddr_in6 *>addr
        inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v6.sin6_port),
                ntohl(v6.sin6_flowinfo), v6.sin6_scope_id)
    if addr.sa_family == AF_UNIX:
        unix_addr = <sockaddr_un *>addr
        path_len = <Py_ssize_t>addrlen - <Py_ssize_t>(<char *>unix_addr.sun_path - <char *>addr)
        if path_len <= 0:
            return ""  # an unnamed socket
        if FS_LINUX and unix_addr.sun_path[0] == 0:
            return (<char *>unix_addr.sun_path)[:path_len]  # Linux abstract namespace: bytes
        return _fsdecode((<char *>unix_addr.sun_path)[:strnlen(unix_addr.sun_path, path_len)])
    raise NotImplementedError(f"address family {addr.sa_family}")


cdef tuple accept_stream(int listen_fd, Plan plan, int *status):
    """Accept one connection as ``server.socket.accept()`` would.

    Returns ``(request, client_address)`` with ``status`` HANDLED, or None
    with the status the failure means for the loop (the stdlib swallows
    every OSError of get_request(); the loop needs to know which ones mean
    "stop trying").
    """
    cdef sockaddr_storage storage
    cdef socklen_t addrlen
    cdef int fd, err
    while True:
        addrlen = sizeof(storage)
        memset(&storage, 0, sizeof(storage))
        with nogil:
            fd = fs_accept_cloexec(listen_fd, <sockaddr *>&storage, &addrlen)
        if fd >= 0:
            break
        err = errno
        if err == EINTR:
            PyErr_CheckSignals()
            continue
        status[0] = _status_of_errno(err)
        return None
    try:
        request = plan.socket_class(plan.family, plan.type, plan.proto, fd)
    except BaseException:
        close(fd)
        raise
    status[0] = HANDLED
    return (request, make_sockaddr(<sockaddr *>&storage, addrlen))


cdef tuple recv_datagram(int listen_fd, Plan plan, char *buffer, Py_ssize_t size, int *status):
    """Receive one datagram as ``UDPServer.get_request()`` would, without
    waiting: None and NOTHING_PENDING once the socket is drained."""
    cdef sockaddr_storage storage
    cdef socklen_t addrlen
    cdef ssize_t n
    cdef int err
    while True:
        addrlen = sizeof(storage)
        memset(&storage, 0, sizeof(storage))
        with nogil:
            n = recvfrom(listen_fd, buffer, size, MSG_DONTWAIT, <sockaddr *>&storage, &addrlen)
        if n >= 0:
            break
        err = errno
        if err == EINTR:
            PyErr_CheckSignals()
            continue
        status[0] = _status_of_errno(err)
        return None
    status[0] = HANDLED
    return ((PyBytes_FromStringAndSize(buffer, n), plan.listener),
            make_sockaddr(<sockaddr *>&storage, addrlen))


cdef int _status_of_errno(int err) noexcept:
    if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
        return BACK_OFF
    if err == EBADF or err == ENOTSOCK:
        return LISTENER_CLOSED
    if err == EAGAIN or err == EWOULDBLOCK:
        return NOTHING_PENDING
    # The client's trouble (ECONNABORTED...) or a datagram error: nothing to
    # take now; the next readiness says whether anything else is waiting.
    return NOTHING_PENDING
