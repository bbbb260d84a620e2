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


cdef class Plan:
    """Which steps of the request chain the core may do itself.

    Made by ``fastserver._plan.plan_for(server)`` when a loop starts.  Every
    flag left at its default means "call the server's method", which is
    always correct; the others are promises that the method is fastserver's
    own default, so doing its work here cannot be told apart.
    """

    def __init__(self, *, handle_one=None, accept="call", verify_default=False,
                 process_default=False, finish_default=False, shutdown="call",
                 service_actions_default=False, listener=None, tcp_nodelay=False,
                 idle_timeout=None, connections=None, max_connections=None, overload="wait",
                 leftover_datagrams=None):
        self.handle_one = handle_one
        self.leftover_datagrams = [] if leftover_datagrams is None else leftover_datagrams
        self.tcp_nodelay = tcp_nodelay
        self.idle_timeout = idle_timeout
        self.connections = connections
        self.open_set = None if connections is None else connections.sockets
        self.prune_at = 0 if connections is None else connections.prune_at
        if max_connections is not None and connections is None:
            raise ValueError("max_connections needs the connections registry")
        self.max_connections = max_connections or 0
        if overload not in ("wait", "refuse"):
            raise ValueError(f"overload must be 'wait' or 'refuse', not {overload!r}")
        self.refuse_overload = overload == "refuse"
        self.service_actions_default = service_actions_default
        self.accept = accept
        self.accept_kind = _ACCEPT_KINDS[accept]
        self.verify_default = verify_default
        self.process_default = process_default
        self.finish_default = finish_default
        self.shutdown = shutdown
        self.shutdown_kind = _SHUTDOWN_KINDS[shutdown]
        self.listener = listener
        if self.accept_kind != ACCEPT_CALL:
            if listener is None:
                raise ValueError(f"accept={accept!r} needs the listening socket")
            self.socket_class = type(listener)
            self.family = self.family_c = int(listener.family)
            self.type = self.type_c = int(listener.type)
            self.proto = self.proto_c = int(listener.proto)

    def __repr__(self):
        return (f"Plan(handle_one={self.handle_one!r}, accept={self.accept!r}, "
                f"verify_default={self.verify_default}, process_default={self.process_default}, "
                f"finish_default={self.finish_default}, shutdown={self.shutdown!r}, "
                f"service_actions_default={self.service_actions_default}, "
                f"tcp_nodelay={self.tcp_nodelay}, idle_timeout={self.idle_timeout!r}, "
                f"max_connections={self.max_connections or None}, "
                f"overload={'refuse' if self.refuse_overload else 'wait'!r})")


cdef Plan _CALL_EVERY_HOOK = Plan()


cdef int _shutdown(server, Plan plan, request) except -1:
    if plan.shutdown_kind == SHUTDOWN_STREAM:
        try:
            request.shutdown(_SHUT_WR)
        except OSError:
            pass  # some platforms may raise ENOTCONN here
        if plan.open_set is not None:
            plan.open_set.discard(request)  # TCPServer.close_request's bookkeeping
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


cdef int dispatch(server, Plan plan, request, client_address) except -1:
    """verify_request → process_request (→ finish_request → handler →
    shutdown_request), handle_error on Exception: as the stdlib does."""
    if not plan.verify_default and not server.verify_request(request, client_address):
        _shutdown(server, plan, request)
        return 0
    try:
        if plan.process_default:
            if plan.finish_default:
                server.RequestHandlerClass(request, client_address, server)
            else:
                server.finish_request(request, client_address)
            _shutdown(server, plan, request)
        else:
            server.process_request(request, client_address)
    except Exception:
        server.handle_error(request, client_address)
        _shutdown(server, plan, request)
    except BaseException:
        _shutdown(server, plan, request)
        raise
    return 0


cdef int take_and_dispatch(server, Plan plan, int listen_fd, DatagramBatch datagrams) except -1:
    """Take one request the way the plan says and run its chain."""
    cdef int status = HANDLED
    cdef tuple taken = None
    if plan.accept_kind == ACCEPT_STREAM:
        taken = accept_stream(listen_fd, plan, &status)
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
            return _status_of_errno(exc.errno or 0)
        if plan.max_connections and _refused(server, plan, request, client_address):
            return HANDLED
        dispatch(server, plan, request, client_address)
        return HANDLED
    if taken is not None:
        if not (plan.max_connections and _refused(server, plan, taken[0], taken[1])):
            dispatch(server, plan, taken[0], taken[1])
    return status


cdef bint _refused(server, Plan plan, request, client_address) except -1:
    """max_connections reached with overload="refuse": the connection just
    taken goes to handle_overload() instead of the request chain."""
    if not plan.refuse_overload or len(plan.open_set) <= plan.max_connections:
        return False
    plan.connections.discard(request)
    server.handle_overload(request, client_address)
    return True


cpdef int handle_request_noblock(server) except -1:
    """The stdlib's ``BaseServer._handle_request_noblock``, every hook called.

    Returns HANDLED, or what a failed ``get_request()`` says of the listener
    (the stdlib ignores every OSError there, and so do we, but a loop that
    retried at once would spin).
    """
    cdef int status = take_and_dispatch(server, _CALL_EVERY_HOOK, -1, None)
    return HANDLED if status == NOTHING_PENDING else status
