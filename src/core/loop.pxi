# The serve loop and handle_request()'s wait.

cdef int _serve_leftover_datagrams(server, LoopPlan plan, LoopState state) except -1:
    """Datagrams an earlier loop received but did not serve (it ended on
    an exception): served first, in order, each taken off the list first."""
    cdef list leftovers = state.leftover_datagrams
    while leftovers and not _shutdown_requested(server):
        request, client_address = leftovers.pop(0)
        dispatch(server, plan, state, request, client_address)
        _service_actions(server, plan)
    return 0


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
    if fd < 0:
        # poll(2) ignores a negative fd and would wait out the whole timeout
        # (for ever with None): handle_request() on a closed server.  The
        # stdlib's selector and the twin's poll object refuse it.
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
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


cdef inline int _service_actions(server, LoopPlan plan) except -1:
    if not plan.service_actions_default:
        server.service_actions()
    return 0


cdef class AcceptGate:
    """Whether the loop polls the listener, and why not when it does not.

    Open while accepting.  It closes for three reasons: *backing off* after
    EMFILE/ENFILE/ENOBUFS/ENOMEM (the listener stays readable, so retrying
    at once would spin), *waiting for room* at max_connections with
    overload "wait" (new clients wait in the kernel's backlog; the next
    close wakes the loop), and *listener gone* (closed under the loop: only
    shutdown() is left to wait for).  The twin's AcceptGate has the same
    methods (fastserver/_core_py.py).
    """
    def __init__(self, Poller poller, int listen_fd, LoopPlan plan, LoopState state):
        self.poller = poller
        self.listen_fd = listen_fd
        if plan.wait_for_room:
            self.connections = state.connections
            self.open_set = state.open_set
        self.max_connections = plan.max_connections
        self.listening = True
        poller.register(listen_fd)

    cdef double wait_timeout(self, double interval) noexcept:
        """The poll timeout (negative: none): ``interval``, shortened to the
        end of a pause."""
        cdef double pause_left
        if self.listening or self.listener_gone or self.waiting_for_room:
            return interval
        pause_left = max(0.0, self.resume_at - compat.fs_monotonic())
        return pause_left if interval < 0 or pause_left < interval else interval

    cdef bint reopen_if_due(self) except -1:
        """After a wake-up: open again when there is room or the pause is
        over.  True when it did (the clients are waiting: try at once)."""
        if self.listening or self.listener_gone:
            return False
        if self.waiting_for_room:
            if len(self.open_set) >= self.max_connections:
                return False
            self.connections.stop_waiting()
            self.waiting_for_room = False
        elif compat.fs_monotonic() < self.resume_at:
            return False
        self.poller.register(self.listen_fd)
        self.listening = True
        return True

    cdef bint full(self) except -1:
        """At max_connections with overload "wait"?  Then close, waiting for
        room: the registry says so to the closers and looks again under its
        lock, so a connection closed in between is never missed."""
        if self.open_set is None or len(self.open_set) < self.max_connections:
            return False
        if not self.connections.wait_for_room(self.max_connections):
            return False
        self.waiting_for_room = True
        self._close()
        return True

    cdef bint taken(self, int status) except -1:
        """After taking a request: False when ``status`` closed the gate."""
        if status == HANDLED:
            self.backoff = 0.0
            return True
        if status == BACK_OFF:
            self.backoff = min(BACKOFF_MAX_C, max(BACKOFF_MIN_C, self.backoff * 2))
            self.resume_at = compat.fs_monotonic() + self.backoff
        else:  # closed: wait for the waker alone until shutdown()
            self.listener_gone = True
        self._close()
        return False

    cdef int release(self) except -1:
        """The loop ends: nobody waits for room any more."""
        if self.waiting_for_room:
            self.connections.stop_waiting()
        return 0

    cdef int _close(self) except -1:
        self.poller.unregister(self.listen_fd)
        self.listening = False
        return 0


def serve_forever(server, poll_interval, plan not None, state not None):
    """Serve until ``server.shutdown()``: the loop of ``BaseServer.serve_forever``.

    ``plan`` is the loop's ``_contract.Plan``, ``state`` the server's
    engine (its waker, open connections and leftover datagrams).  Each
    wake-up drains up to DRAIN_BATCH ready requests before waiting again.
    ``service_actions()`` runs after every request and after every wake-up
    without one, as in the stdlib (where each select() returns once per
    request).
    """
    cdef LoopPlan steps = LoopPlan(plan)
    cdef LoopState loop_state = LoopState(state)
    cdef Waker waker = state.waker
    cdef int listen_fd = server.fileno()
    cdef int wake_fd = waker.read_fd
    cdef double interval = -1.0 if poll_interval is None else max(0.0, poll_interval)
    cdef bint listener_ready
    cdef int ready[GREEN_MAX_EVENTS]
    cdef int ready_events[GREEN_MAX_EVENTS]
    cdef int n, i, handled, status
    cdef Poller poller = Poller()
    cdef AcceptGate gate = None
    cdef DatagramBatch datagrams = None
    cdef GreenHub hub = None
    cdef bint restore_blocking = False
    cdef bint finished = False
    if steps.accept_kind == ACCEPT_STREAM:
        # accept(2) here drains until EAGAIN, with no poll() probe per
        # request, and never blocks when another process sharing the
        # listener (a prefork worker, a forked child) took the connection.
        # Python's view (gettimeout() None) is untouched: only the fd flag.
        restore_blocking = _check_errno(compat.fs_make_nonblocking(listen_fd)) == 1
    elif steps.accept_kind == ACCEPT_DATAGRAM:
        datagrams = DatagramBatch(server.max_packet_size)
    if steps.green:
        # Green handlers: the connections' greenlets wait in this poller
        # too, and run between the loop's waits (core/green.pxi).
        hub = loop_state.hub = GreenHub(poller, waker,
                                        getattr(server, "green_slow_callback", None))
        hub.start()
    try:
        poller.register(wake_fd)
        gate = AcceptGate(poller, listen_fd, steps, loop_state)
        waker._drain()  # a shutdown() of an earlier loop may have left a wake-up
        _serve_leftover_datagrams(server, steps, loop_state)
        while not _shutdown_requested(server):
            PyErr_CheckSignals()  # handlers pending since the last wait run first
            if hub is None:
                n = poller.wait_fds(gate.wait_timeout(interval), ready, MAX_EVENTS)
            else:
                n = poller.wait_events(hub.next_timeout(gate.wait_timeout(interval)),
                                       ready, ready_events, GREEN_MAX_EVENTS)
            # A signal delivered to another thread does not interrupt this
            # wait; its Python handler runs now, at the latest after
            # poll_interval, as between the stdlib loop's bytecodes.
            PyErr_CheckSignals()
            listener_ready = False
            for i in range(n):
                if ready[i] == wake_fd:
                    waker._drain()
                elif ready[i] == listen_fd:
                    listener_ready = gate.listening
                elif hub is not None:
                    # Edges are reported once: served even when the loop
                    # stops now (the handlers in flight go on after it).
                    hub.on_ready(ready[i], ready_events[i])
            if hub is not None:
                hub.run_due()
            if _shutdown_requested(server):
                break
            if gate.reopen_if_due():
                listener_ready = True
            if not listener_ready:
                _service_actions(server, steps)  # a timeout or a wake-up
                continue
            handled = 0
            if datagrams is not None:
                datagrams.drained = False  # woken up: something may be waiting
            while True:
                if steps.wait_for_room and gate.full():
                    if not handled:
                        _service_actions(server, steps)
                    break
                if (steps.accept_kind == ACCEPT_STREAM
                        and compat.fs_make_nonblocking(listen_fd) == 1):
                    # Another process serving the same listener (forked after
                    # bind) ended its loop and restored blocking mode on the
                    # shared file description, maybe while our last handler
                    # ran: take it back before each accept(2), so it cannot
                    # block where shutdown() can't reach.  (One F_GETFL; the
                    # window left is the few instructions up to accept4().)
                    restore_blocking = True
                if steps.handle_one is not None:
                    steps.handle_one()
                    status = HANDLED
                else:
                    status = take_and_dispatch(server, steps, loop_state, listen_fd, datagrams)
                if status == NOTHING_PENDING and handled:
                    break  # our own probe found nothing: not a request
                handled += 1
                # After every request, as the stdlib's loop does after every
                # select(): ForkingMixIn's max_children relies on it.
                _service_actions(server, steps)
                if status == NOTHING_PENDING:
                    break
                if not gate.taken(status):
                    break
                if handled >= _DRAIN_BATCH or _shutdown_requested(server):
                    break
                # The core's own accept and receive do not wait, so the next
                # try tells; get_request() may block: ask first.
                if steps.accept_kind == ACCEPT_CALL and not _readable_now(listen_fd):
                    break
        finished = True
    finally:
        if gate is not None:
            gate.release()
        if hub is not None:
            _finish_green(server, hub, poller, listen_fd if gate is not None and gate.listening
                          else -1, finished)
        poller.close()
        if datagrams is not None:
            loop_state.leftover_datagrams.extend(datagrams.leftovers(steps))
        # The listener may have been closed (and its number reused) meanwhile.
        if restore_blocking and steps.listener.fileno() == listen_fd:
            compat.fs_make_blocking(listen_fd)


cdef int _finish_green(server, GreenHub hub, Poller poller, int listen_fd,
                       bint finished) except -1:
    """The loop has stopped accepting: serve the green handlers in flight
    to their end (block_on_close, as ThreadingMixIn's server_close() joins
    its threads; shutdown(timeout=...) cuts them at its deadline), or end
    them at once (block_on_close false, or the loop is unwinding from an
    exception: their finally blocks and shutdown_request() run)."""
    if listen_fd >= 0:
        poller.unregister(listen_fd)
    try:
        if finished and getattr(server, "block_on_close", True):
            hub.run_until_done()
    finally:
        try:
            hub.kill_all()
        finally:
            hub.stop()
    return 0
