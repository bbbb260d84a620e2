# The serve loop and handle_request()'s wait.

cdef bint _readable_now(int fd) except -1:
    """Is ``fd`` readable right now?  One poll(2) with a zero timeout."""
    cdef pollfd p
    cdef int n
    p.fd = fd
    p.events = POLLIN
    p.revents = 0
    while True:
        n = poll(&p, 1, 0)
        if n >= 0:
            return n > 0
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()


def wait_readable(int fd, timeout):
    """Wait for one fd: True when readable (or in error), False on timeout."""
    cdef pollfd p
    cdef int n
    cdef double remaining = -1.0 if timeout is None else max(0.0, timeout)
    cdef double deadline = fs_monotonic() + remaining
    cdef int ms
    p.fd = fd
    p.events = POLLIN
    while True:
        p.revents = 0
        ms = fs_timeout_ms(remaining)
        with nogil:
            n = poll(&p, 1, ms)
        if n >= 0:
            return n > 0
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()
        if remaining >= 0:
            remaining = deadline - fs_monotonic()
            if remaining < 0:
                remaining = 0


cdef inline bint _shutdown_requested(server) except -1:
    # Read every time, not cached: code in the wild stops the loop from a
    # handler with ``server._BaseServer__shutdown_request = True``.
    return server._BaseServer__shutdown_request


cdef inline int _service_actions(server, Plan plan) except -1:
    if not plan.service_actions_default:
        server.service_actions()
    return 0


cdef class _Backoff:
    """Pauses accepting after EMFILE/ENFILE/ENOBUFS/ENOMEM: the listener
    stays readable, so retrying at once would spin."""
    cdef double delay, resume_at

    cdef void failed(self) noexcept:
        self.delay = min(BACKOFF_MAX_C, max(BACKOFF_MIN_C, self.delay * 2))
        self.resume_at = fs_monotonic() + self.delay

    cdef void succeeded(self) noexcept:
        self.delay = 0.0


def serve_forever(server, poll_interval, Waker waker not None, Plan plan not None):
    """Serve until ``server.shutdown()``: the loop of ``BaseServer.serve_forever``.

    Each wake-up drains up to DRAIN_BATCH ready requests before waiting
    again.  ``service_actions()`` runs after every request and after every
    wake-up without one, as in the stdlib (where each select() returns once
    per request).
    """
    cdef int listen_fd = server.fileno()
    cdef int wake_fd = waker.read_fd
    cdef double interval = -1.0 if poll_interval is None else max(0.0, poll_interval)
    cdef double timeout
    cdef bint listening = True, listener_ready, listener_gone = False
    cdef int ready[MAX_EVENTS]
    cdef int n, i, handled, status
    cdef _Backoff backoff = _Backoff()
    cdef Poller poller = Poller()
    cdef char *buffer = NULL
    cdef Py_ssize_t buffer_size = 0
    if plan.accept_kind == ACCEPT_DATAGRAM:
        buffer_size = server.max_packet_size
        buffer = <char *>malloc(buffer_size if buffer_size > 0 else 1)
        if buffer == NULL:
            raise MemoryError()
    try:
        poller.register(listen_fd)
        poller.register(wake_fd)
        waker._drain()  # a shutdown() of an earlier loop may have left a wake-up
        while not _shutdown_requested(server):
            timeout = interval
            if not listening and not listener_gone:
                timeout = max(0.0, backoff.resume_at - fs_monotonic())
                if 0 <= interval < timeout:
                    timeout = interval
            n = poller.wait_fds(timeout, ready, MAX_EVENTS)
            if _shutdown_requested(server):
                break
            listener_ready = False
            for i in range(n):
                if ready[i] == wake_fd:
                    waker._drain()
                elif ready[i] == listen_fd:
                    listener_ready = listening
            if not listening and not listener_gone and fs_monotonic() >= backoff.resume_at:
                poller.register(listen_fd)
                listening = True
                listener_ready = True  # try at once: the clients are waiting
            if not listener_ready:
                _service_actions(server, plan)  # a timeout or a wake-up
                continue
            handled = 0
            while True:
                if plan.handle_one is not None:
                    plan.handle_one()
                    status = HANDLED
                else:
                    status = take_and_dispatch(server, plan, listen_fd, buffer, buffer_size)
                if status == NOTHING_PENDING and handled:
                    break  # our own probe found nothing: not a request
                handled += 1
                # After every request, as the stdlib's loop does after every
                # select(): ForkingMixIn's max_children relies on it.
                _service_actions(server, plan)
                if status == NOTHING_PENDING:
                    break
                if status != HANDLED:
                    poller.unregister(listen_fd)
                    listening = False
                    if status == BACK_OFF:
                        backoff.failed()
                    else:  # closed: wait for the waker alone until shutdown()
                        listener_gone = True
                    break
                backoff.succeeded()
                if handled >= _DRAIN_BATCH or _shutdown_requested(server):
                    break
                # Datagrams are received without waiting, so the next try
                # tells; a stream listener is blocking: ask first.
                if plan.accept_kind != ACCEPT_DATAGRAM and not _readable_now(listen_fd):
                    break
    finally:
        poller.close()
        free(buffer)
