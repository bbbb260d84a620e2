# Taking requests off the listening socket without Python's socket methods:
# accept(2) for streams, recvfrom(2) for datagrams.  The objects made here
# are the ones Python's socket.accept() and socket.recvfrom() return.

cdef object make_sockaddr(socket.sockaddr *addr, socket.socklen_t addrlen):
    """A socket address as Python's socket module gives it (makesockaddr)."""
    cdef char text[64]
    cdef socket.sockaddr_in *v4
    cdef socket.sockaddr_in6 *v6
    cdef socket.sockaddr_un *unix_addr
    cdef Py_ssize_t path_len
    cdef int length
    if addrlen == 0:
        return None
    if addr.sa_family == socket.AF_INET:
        v4 = <socket.sockaddr_in *>addr
        length = compat.fs_format_ipv4(&v4.sin_addr, text)
        return (PyUnicode_DecodeASCII(text, length, NULL), socket.ntohs(v4.sin_port))
    if addr.sa_family == socket.AF_INET6:
        v6 = <socket.sockaddr_in6 *>addr
        socket.inet_ntop(socket.AF_INET6, &v6.sin6_addr, text, sizeof(text))
        return (text.decode("ascii"), socket.ntohs(v6.sin6_port),
                socket.ntohl(v6.sin6_flowinfo), v6.sin6_scope_id)
    if addr.sa_family == socket.AF_UNIX:
        unix_addr = <socket.sockaddr_un *>addr
        path_len = <Py_ssize_t>addrlen - <Py_ssize_t>(<char *>unix_addr.sun_path - <char *>addr)
        if path_len <= 0:
            return ""  # an unnamed socket
        if compat.FS_LINUX and unix_addr.sun_path[0] == 0:
            return (<char *>unix_addr.sun_path)[:path_len]  # Linux abstract namespace: bytes
        return _fsdecode(
            (<char *>unix_addr.sun_path)[:string.strnlen(unix_addr.sun_path, path_len)])
    raise NotImplementedError(f"address family {addr.sa_family}")


cdef extern from *:
    """
    /* The leading fields of CPython's socket object (PySocketSockObject in
     * Modules/socketmodule.h: the same on POSIX from 3.7 to 3.13).
     * socket.socket(family, type, proto, fileno) runs a Python __init__ and
     * a getsockname() to validate the fd; an accepted fd needs neither, so
     * the core fills these fields itself, after tp_new has set the rest
     * (timeout, error handler, module state) as the constructor would.
     * fs_socket_layout_ok() checks the layout against a real socket at
     * import; if it ever differs, the core calls the constructor. */
    typedef struct {
        PyObject_HEAD
        int sock_fd;
        int sock_family;
        int sock_type;
        int sock_proto;
    } fs_socket_head;

    static PyObject *fs_socket_from_fd(PyObject *cls, int fd, int family, int type, int proto)
    {
        /* Set by the first call, which is _check_socket_layout()'s at import
         * (one thread): later calls, from any thread, only read it. */
        static PyObject *no_args = NULL;
        PyTypeObject *tp = (PyTypeObject *)cls;
        if (no_args == NULL && (no_args = PyTuple_New(0)) == NULL)
            return NULL;
        PyObject *sock = tp->tp_new(tp, no_args, NULL);
        if (sock == NULL)
            return NULL;
        /* As socket.__init__ does, before the object owns the fd. */
        if (PySys_Audit("socket.__new__", "Oiii", sock, family, type, proto) < 0) {
            Py_DECREF(sock);
            return NULL;
        }
        fs_socket_head *head = (fs_socket_head *)sock;
        head->sock_fd = fd;
        head->sock_family = family;
        head->sock_type = type;
        head->sock_proto = proto;
        return sock;
    }

    static int fs_socket_layout_ok(PyObject *sock, int fd, int family, int type, int proto)
    {
        fs_socket_head *head = (fs_socket_head *)sock;
        return head->sock_fd == fd && head->sock_family == family &&
               head->sock_type == type && head->sock_proto == proto;
    }
    """
    object fs_socket_from_fd(object cls, int fd, int family, int type, int proto)
    bint fs_socket_layout_ok(object sock, int fd, int family, int type, int proto)


cdef bint _check_socket_layout():
    """Does the core's view of socket objects match this interpreter's?"""
    a, b = _socket.socketpair()
    with a, b:
        if not fs_socket_layout_ok(a, a.fileno(), a.family, a.type, a.proto):
            return False
        probe = fs_socket_from_fd(_socket.socket, -1, a.family, a.type, a.proto)
        return probe.fileno() == -1 and probe.family == a.family and probe.type == a.type


cdef bint _SOCKET_LAYOUT_OK = _check_socket_layout()


cdef object new_socket(LoopPlan plan, int fd):
    """``plan.socket_class(family, type, proto, fileno=fd)``, minus the
    Python __init__ frame and its getsockname(): the same object, fields,
    slots and audit event.  On an exception the caller still owns ``fd``."""
    if not _SOCKET_LAYOUT_OK:
        return plan.socket_class(plan.family, plan.type, plan.proto, fd)
    sock = fs_socket_from_fd(plan.socket_class, fd, plan.family_c, plan.type_c, plan.proto_c)
    try:
        sock._io_refs = 0      # socket.socket.__init__ sets its two slots
        sock._closed = False
    except BaseException:
        sock.detach()  # the fd goes back to the caller
        raise
    return sock


cdef tuple accept_stream(int listen_fd, LoopPlan plan, LoopState state, int *status):
    """Accept one connection as ``server.socket.accept()`` would.

    Returns ``(request, client_address)`` with ``status`` HANDLED, or None
    with the status the failure means for the loop (the stdlib swallows
    every OSError of get_request(); the loop needs to know which ones mean
    "stop trying").
    """
    cdef socket.sockaddr_storage storage
    cdef socket.socklen_t addrlen
    cdef int fd, err
    while True:
        addrlen = sizeof(storage)
        string.memset(&storage, 0, sizeof(storage))
        with nogil:
            fd = compat.fs_accept_cloexec(listen_fd, <socket.sockaddr *>&storage, &addrlen,
                                          plan.green)
        if fd >= 0:
            break
        err = errno.errno
        if err == errno.EINTR:
            PyErr_CheckSignals()
            continue
        status[0] = status_of_errno(err)
        return None
    if plan.tcp_nodelay:
        compat.fs_set_tcp_nodelay(fd)
    try:
        if state.hub is None:
            request = new_socket(plan, fd)
        else:
            request = new_green_socket(plan, state.hub, fd)
    except BaseException:
        unistd.close(fd)
        raise
    # What TCPServer.get_request does after accept(), in its order.
    if plan.idle_timeout is not None:
        request.settimeout(plan.idle_timeout)
    state.open_set.add(request)  # TCPServer.get_request's bookkeeping
    if len(state.open_set) >= state.prune_at:
        state.prune_at = state.connections.prune()
    status[0] = HANDLED
    return (request, make_sockaddr(<socket.sockaddr *>&storage, addrlen))


cdef class DatagramBatch:
    """Datagrams received together (one recvmmsg(2) on Linux), handed out
    one at a time as ``UDPServer.get_request()`` would return them.

    Each datagram is truncated to max_packet_size, as recvfrom() truncates.
    Those not yet handed out when the loop ends (a handler raised
    KeyboardInterrupt, say) are returned by ``leftovers()`` so the next
    loop serves them: a datagram read is never dropped.
    """

    def __cinit__(self, Py_ssize_t size):
        size = max(0, size)
        # Up to 32 at a time, within ~1 MiB of buffers.
        if compat.fs_datagram_batch_init(&self.batch,
                                         min(compat.FS_MAX_DATAGRAM_BATCH,
                                             (1 << 20) // max(1, size)),
                                         size) < 0:
            raise MemoryError()

    def __dealloc__(self):
        compat.fs_datagram_batch_free(&self.batch)

    cdef bint empty(self) noexcept:
        return self.next >= self.count

    cdef int fill(self, int fd) except -1:
        """Receive what is waiting, without blocking: HANDLED, or what
        the errno means for the loop (NOTHING_PENDING once drained)."""
        cdef int n, err
        while True:
            # MSG_DONTWAIT: it never blocks, so the GIL stays held; dropping
            # and taking it back would cost more than the call itself.
            n = compat.fs_datagram_batch_recv(fd, &self.batch)
            if n > 0:
                self.count = n
                self.next = 0
                self.drained = n < self.batch.capacity
                return HANDLED
            err = errno.errno
            if err == errno.EINTR:
                PyErr_CheckSignals()
                continue
            return status_of_errno(err)

    cdef tuple take(self, LoopPlan plan):
        """The next datagram: ``((data, server.socket), client_address)``."""
        cdef int i = self.next
        address = make_sockaddr(<socket.sockaddr *>&self.batch.addrs[i], self.batch.addrlens[i])
        data = PyBytes_FromStringAndSize(self.batch.data + i * self.batch.size,
                                         self.batch.lengths[i])
        self.next = i + 1
        return ((data, plan.listener), address)

    cdef list leftovers(self, LoopPlan plan):
        cdef list taken = []
        while not self.empty():
            taken.append(self.take(plan))
        return taken


cpdef int status_of_errno(int err) noexcept:
    """What a failed accept or receive says of the listener: as
    ``_contract.status_of_errno`` (tests/test_contract.py compares the two),
    except that what the stdlib's loop would ignore is NOTHING_PENDING here,
    since the core's own accept and receive never wait."""
    if err == errno.EMFILE or err == errno.ENFILE or err == errno.ENOBUFS or err == errno.ENOMEM:
        return BACK_OFF
    if err == errno.EBADF or err == errno.ENOTSOCK:
        return LISTENER_CLOSED
    if err == errno.EAGAIN or err == errno.EWOULDBLOCK:
        return NOTHING_PENDING
    # The client's trouble (ECONNABORTED...) or a datagram error: nothing to
    # take now; the next readiness says whether anything else is waiting.
    return NOTHING_PENDING


#: True when accepted sockets are built without socket.socket.__init__.
FAST_SOCKET_CONSTRUCTION = _SOCKET_LAYOUT_OK
