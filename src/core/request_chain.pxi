# The request chain: the stdlib's _handle_request_noblock, with the steps
# that are fastserver's own defaults done here instead of through Python
# method calls.
#
# The fast-path rule: a hook the user overrides (on the class or on the
# instance) is always called, with the stdlib's arguments, in the stdlib's
# order.  The Python layer (fastserver/_plan.py) decides once per loop which
# steps are still the defaults and says so in a Plan; this file only obeys.

_ACCEPT_KINDS = {"call": ACCEPT_CALL, "stream": ACCEPT_STREAM, "datagram": ACCEPT_DATAGRAM}
_SHUTDOWN_KINDS = {"call": SHUTDOWN_CALL, "stream": SHUTDOWN_STREAM, "nothing": SHUTDOWN_NOTHING}


cdef class LoopPlan:
    """A ``_contract.Plan`` in C fields, for the request chain's hot path.

    Read once from the plan when a loop starts; the fields mean what the
    plan's fields of the same names mean (fastserver/_contract.py).
    """

    def __init__(self, plan):
        self.plan = plan
        self.handle_one = plan.handle_one
        self.verify_default = plan.verify_default
        self.process_default = plan.process_default
        self.finish_default = plan.finish_default
        self.service_actions_default = plan.service_actions_default
        self.tcp_nodelay = plan.tcp_nodelay
        self.idle_timeout = plan.idle_timeout
        self.max_connections = plan.max_connections
        self.overload = plan.overload
        self.refuse_overload = plan.refuse_overload
        self.wait_for_room = plan.wait_for_room
        self.accept = plan.accept
        self.accept_kind = _ACCEPT_KINDS[plan.accept]
        self.shutdown = plan.shutdown
        self.shutdown_kind = _SHUTDOWN_KINDS[plan.shutdown]
        self.listener = listener = plan.listener
        self.green = plan.green
        if self.accept_kind != ACCEPT_CALL:
            self.socket_class = type(listener)
            self.family = self.family_c = int(listener.family)
            self.type = self.type_c = int(listener.type)
            self.proto = self.proto_c = int(listener.proto)

    def __repr__(self):
        return f"LoopPlan({self.plan!r})"


cdef LoopPlan _CALL_EVERY_HOOK = LoopPlan(_contract.CALL_EVERY_HOOK)


cdef class LoopState:
    """What one loop changes, read from the server's engine (its
    ``_contract.LoopState``) when the loop starts."""

    def __init__(self, state):
        self.connections = state.connections
        self.open_set = self.connections.sockets
        self.prune_at = self.connections.prune_at
        self.leftover_datagrams = state.leftover_datagrams
        self.hub = None


cdef int _shutdown(server, LoopPlan plan, LoopState state, request) except -1:
    if plan.shutdown_kind == SHUTDOWN_STREAM:
        try:
            request.shutdown(_SHUT_WR)
        except OSError:
            pass  # some platforms may raise ENOTCONN here
        if state is not None:
            state.open_set.discard(request)  # TCPServer.close_request's bookkeeping
        if type(request) is _plain_socket:
            # socket.socket.close(), without its two Python frames: the fd
            # closes now unless a makefile() object still holds it.
            request._closed = True
            if request._io_refs <= 0:
                _close_fd_of(request)
        else:
            request.close()
    elif plan.shutdown_kind == SHUTDOWN_CALL:
        server.shutdown_request(request)
    return 0


cdef int dispatch(server, LoopPlan plan, LoopState state, request, client_address) except -1:
    """verify_request → process_request (→ finish_request → handler →
    shutdown_request), handle_error on Exception: as the stdlib does."""
    if not plan.verify_default and not server.verify_request(request, client_address):
        _shutdown(server, plan, state, request)
        return 0
    try:
        if plan.process_default:
            if plan.finish_default:
                server.RequestHandlerClass(request, client_address, server)
            else:
                server.finish_request(request, client_address)
            _shutdown(server, plan, state, request)
        else:
            server.process_request(request, client_address)
    except Exception:
        server.handle_error(request, client_address)
        _shutdown(server, plan, state, request)
    except BaseException:
        _shutdown(server, plan, state, request)
        raise
    return 0


cdef int take_and_dispatch(server, LoopPlan plan, LoopState state, int listen_fd,
                           DatagramBatch datagrams) except -1:
    """Take one request the way the plan says and run its chain."""
    cdef int status = HANDLED
    cdef tuple taken = None
    if plan.accept_kind == ACCEPT_STREAM:
        taken = accept_stream(listen_fd, plan, state, &status)
    elif plan.accept_kind == ACCEPT_DATAGRAM:
        if datagrams.empty():
            if datagrams.drained:
                return NOTHING_PENDING
            status = datagrams.fill(listen_fd)
        if status == HANDLED:
            taken = datagrams.take(plan)
    else:
        try:
            request, client_address = server.get_request()
        except OSError as exc:
            return status_of_errno(exc.errno or 0)
        if plan.refuse_overload and _refused(server, plan, state, request, client_address):
            return HANDLED
        dispatch(server, plan, state, request, client_address)
        return HANDLED
    if taken is not None:
        if not (plan.refuse_overload and _refused(server, plan, state, taken[0], taken[1])):
            dispatch(server, plan, state, taken[0], taken[1])
    return status


cdef bint _refused(server, LoopPlan plan, LoopState state, request, client_address) except -1:
    """max_connections reached with overload="refuse": the connection just
    taken goes to handle_overload() instead of the request chain."""
    if len(state.open_set) <= plan.max_connections:
        return False
    state.connections.discard(request)
    server.handle_overload(request, client_address)
    return True


cpdef int handle_request_noblock(server) except -1:
    """The stdlib's ``BaseServer._handle_request_noblock``, every hook called.

    Returns HANDLED, or what a failed ``get_request()`` says of the listener
    (the stdlib ignores every OSError there, and so do we, but a loop that
    retried at once would spin).
    """
    cdef int status = take_and_dispatch(server, _CALL_EVERY_HOOK, None, -1, None)
    return HANDLED if status == NOTHING_PENDING else status
