# The serve loop and handle_request()'s wait.

cdef int _serve_leftover_datagrams(server, Plan plan) except -1:
    """Datagrams an earlier loop received but did not serve (it ended on
    an exception): served first, in order, each taken off the list first."""
    cdef list leftovers = plan.leftover_datagrams
    while leftovers and not _shutdown_requested(server):
        request, client_address = leftovers.pop(0)
        dispatch(server, plan, request, client_address)
        _service_actions(server, plan)
    return 0


cdef bint _full(Plan plan) except -1:
    """At max_connections?  Says so to the closers first, then looks again,
    so a connection closed in between is never missed."""
    if len(plan.open_set) < plan.max_connections:
        return False
    plan.connections.waiting_for_room = True
    if len(plan.open_set) < plan.max_connections:
        plan.connections.waiting_for_room = False
        return False
    return True


cdef int _check_errno(int result) except -1:
    if result < 0:
        PyErr_SetFromErrno(OSError)
    return result


cdef bint _readable_now(int fd) except -1:
    """Is ``fd`` readable right now?  One poll(2) with a zero timeout."""
    cdef poll.pollfd p
    cdef int n
    p.fd = fd
    p.events = poll.POLLIN
    p.revents = 0
    while True:
        n = poll.poll(&p, 1, 0)
        if n >= 0:
            return n > 0
        if errno.errno != errno.EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()


def wait_readable(int fd, timeout):
    """Wait for one fd: True when readable (or in error), False on timeout."""
    cdef poll.pollfd p
    cdef int n
    cdef double remaining = -1.0 if timeout is None else max(0.0, timeout)
    cdef double deadline = compat.fs_monotonic() + remaining
    cdef int ms
    p.fd = fd
    p.events = poll.POLLIN
    while True:
        p.revents = 0
        ms = compat.fs_timeout_ms(remaining)
        with nogil:
            n = poll.poll(&p, 1, ms)
        if n >= 0:
            return n > 0
        if errno.errno != errno.EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()
        if remaining >= 0:
            remaining = deadline - compat.fs_monotonic()
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

    cdef void failed(self) noexcept:
        self.delay = min(BACKOFF_MAX_C, max(BACKOFF_MIN_C, self.delay * 2))
        self.resume_at = compat.fs_monotonic() + self.delay

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
    cdef bint waiting_for_room = False  # at max_connections, overload="wait"
    cdef int ready[MAX_EVENTS]
    cdef int n, i, handled, status
    cdef _Backoff backoff = _Backoff()
    cdef Poller poller = Poller()
    cdef DatagramBatch datagrams = None
    cdef bint restore_blocking = False
    if plan.accept_kind == ACCEPT_STREAM:
        # accept(2) here drains until EAGAIN, with no poll() probe per
        # request, and never blocks when another process sharing the
        # listener (a prefork worker, a forked child) took the connection.
        # Python's view (gettimeout() None) is untouched: only the fd flag.
        restore_blocking = _check_errno(compat.fs_make_nonblocking(listen_fd)) == 1
    elif plan.accept_kind == ACCEPT_DATAGRAM:
        datagrams = DatagramBatch(server.max_packet_size)
    try:
        poller.register(listen_fd)
        poller.register(wake_fd)
        waker._drain()  # a shutdown() of an earlier loop may have left a wake-up
        _serve_leftover_datagrams(server, plan)
        while not _shutdown_requested(server):
            PyErr_CheckSignals()  # handlers pending since the last wait run first
            timeout = interval
            if not listening and not listener_gone and not waiting_for_room:
                timeout = max(0.0, backoff.resume_at - compat.fs_monotonic())
                if 0 <= interval < timeout:
                    timeout = interval
            n = poller.wait_fds(timeout, ready, MAX_EVENTS)
            # A signal delivered to another thread does not interrupt this
            # wait; its Python handler runs now, at the latest after
            # poll_interval, as between the stdlib loop's bytecodes.
            PyErr_CheckSignals()
            if _shutdown_requested(server):
                break
            listener_ready = False
            for i in range(n):
                if ready[i] == wake_fd:
                    waker._drain()
                elif ready[i] == listen_fd:
                    listener_ready = listening
            if waiting_for_room:
                if len(plan.open_set) < plan.max_connections:
                    plan.connections.waiting_for_room = False
                    waiting_for_room = False
                    poller.register(listen_fd)
                    listening = True
                    listener_ready = True  # the clients are waiting in the backlog
            elif not listening and not listener_gone and compat.fs_monotonic() >= backoff.resume_at:
                poller.register(listen_fd)
                listening = True
                listener_ready = True  # try at once: the clients are waiting
            if not listener_ready:
                _service_actions(server, plan)  # a timeout or a wake-up
                continue
            handled = 0
            if datagrams is not None:
                datagrams.drained = False  # woken up: something may be waiting
            while True:
                if plan.max_connections and not plan.refuse_overload and _full(plan):
                    # New connections wait in the kernel's backlog; the next
                    # close wakes the loop (OpenConnections.discard).
                    poller.unregister(listen_fd)
                    listening = False
                    waiting_for_room = True
                    if not handled:
                        _service_actions(server, plan)
                    break
                if plan.accept_kind == ACCEPT_STREAM and compat.fs_make_nonblocking(listen_fd) == 1:
                    # Another process serving the same listener (forked after
                    # bind) ended its loop and restored blocking mode on the
                    # shared file description, maybe while our last handler
                    # ran: take it back before each accept(2), so it cannot
                    # block where shutdown() can't reach.  (One F_GETFL; the
                    # window left is the few instructions up to accept4().)
                    restore_blocking = True
                if plan.handle_one is not None:
                    plan.handle_one()
                    status = HANDLED
                else:
                    status = take_and_dispatch(server, plan, listen_fd, datagrams)
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
                # The core's own accept and receive do not wait, so the next
                # try tells; get_request() may block: ask first.
                if plan.accept_kind == ACCEPT_CALL and not _readable_now(listen_fd):
                    break
    finally:
        if waiting_for_room:
            plan.connections.waiting_for_room = False
        poller.close()
        if datagrams is not None:
            plan.leftover_datagrams.extend(datagrams.leftovers(plan))
        # The listener may have been closed (and its number reused) meanwhile.
        if restore_blocking and plan.listener.fileno() == listen_fd:
            compat.fs_make_blocking(listen_fd)
