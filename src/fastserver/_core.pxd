# The compiled core's classes and their fields: the C-level declaration of
# fastserver._core, as _core.pyi beside it is the Python-level one.  The
# method bodies are in src/core/*.pxi, one section here per file.
#
# Cython reads this file for the module because it sits at the module's
# place in the package: src/_core.pyx is compiled as fastserver._core, and a
# _core.pxd beside the .pyx would not be found.  It stays out of the wheel
# (pyproject.toml's exclude-package-data); setup.py re-runs Cython when it
# changes, which cythonize would not notice on its own.
#
# Fields are declared in the order of the object's memory layout; keep it.
cimport cython

from includes cimport compat, poll


# -- core/waker.pxi -----------------------------------------------------------

cdef class Waker:
    # Both -1 once closed.  Linux: one eventfd, both fields the same fd.
    cdef int read_fd                # what the loop watches: the eventfd, or the pipe's read end
    cdef int write_fd               # what wake() writes to: the eventfd, or the pipe's write end
    # Held by wake() and close(): without the GIL (free-threaded Python) a
    # wake() could otherwise write to an fd number close() just released.
    cdef cython.pymutex lock

    cdef void _drain(self) noexcept


# -- core/poller.pxi ----------------------------------------------------------

cdef enum Backend:
    BACKEND_EPOLL
    BACKEND_KQUEUE
    BACKEND_POLL


cdef class Poller:
    cdef Backend kind               # which API the methods call
    cdef int pollfd_fd              # the epoll or kqueue fd; -1 for poll
    cdef poll.pollfd *pollfds       # the poll backend's set, grown by register(); or NULL
    cdef int npollfds               # entries in pollfds
    cdef readonly str backend       # "epoll", "kqueue" or "poll": kind's name

    cdef int wait_fds(self, double timeout, int *ready, int max_ready) except -1
    cdef int _wait_once(self, double timeout, int *ready, int max_ready) noexcept
    cdef int watch(self, int fd) except -1
    cdef int arm(self, int fd, int events) except -1
    cdef void disarm(self, int fd) noexcept
    cdef void forget(self, int fd) noexcept
    cdef Py_ssize_t _poll_slot(self, int fd) noexcept
    cdef int wait_events(self, double timeout, int *fds, int *events, int max_ready) except -1
    cdef int _wait_events_once(self, double timeout, int *fds, int *events,
                               int max_ready) noexcept


# -- core/request_chain.pxi ---------------------------------------------------

cdef enum AcceptKind:
    ACCEPT_CALL        # request, client_address = server.get_request()
    ACCEPT_STREAM      # TCPServer.get_request: accept(2) here
    ACCEPT_DATAGRAM    # UDPServer.get_request: recvfrom(2) here

cdef enum ShutdownKind:
    SHUTDOWN_CALL      # server.shutdown_request(request)
    SHUTDOWN_STREAM    # TCPServer's: request.shutdown(SHUT_WR), request.close()
    SHUTDOWN_NOTHING   # UDPServer's: nothing to shut down or close


cdef class LoopPlan:
    cdef readonly object plan            # the _contract.Plan it was read from
    # The plan's fields, under the same names (tests/test_contract.py
    # checks that every field of the contract's Plan is here).
    cdef readonly object handle_one      # the user's _handle_request_noblock, or None
    cdef readonly str accept             # "call", "stream" or "datagram"
    cdef readonly str shutdown           # "call", "stream" or "nothing"
    cdef readonly str overload           # "wait" or "refuse"
    cdef readonly bint verify_default    # verify_request is BaseServer's (always True)
    cdef readonly bint process_default   # process_request is BaseServer's
    cdef readonly bint finish_default    # finish_request is BaseServer's, and no TLS
    cdef readonly bint service_actions_default  # BaseServer's: does nothing
    cdef readonly bint tcp_nodelay       # set TCP_NODELAY on connections accepted here
    cdef readonly object idle_timeout    # settimeout() of connections accepted here, or None
    cdef readonly Py_ssize_t max_connections  # 0: no limit
    cdef readonly object listener        # server.socket, for the C accept kinds
    # Derived once, for the hot path.
    cdef bint refuse_overload            # at the limit: handle_overload(), not wait
    cdef bint wait_for_room              # at the limit: stop accepting
    cdef object socket_class             # type(server.socket), to wrap accepted fds
    cdef object family                   # the listener's family, type and proto as ints
    cdef object type                     # (C accept kinds): what accepted sockets get
    cdef object proto
    cdef int family_c                    # the same three as C ints, for fs_socket_from_fd()
    cdef int type_c
    cdef int proto_c
    cdef AcceptKind accept_kind          # self.accept as an enum
    cdef ShutdownKind shutdown_kind      # self.shutdown as an enum
    cdef readonly bint green             # each connection's chain in a greenlet (GreenMixIn)


cdef class LoopState:
    # What one loop changes, read from the server's engine when it starts.
    cdef object connections              # the server's OpenConnections
    cdef set open_set                    # connections.sockets
    cdef Py_ssize_t prune_at             # connections.prune_at, cached
    cdef list leftover_datagrams         # read by a loop that ended early; served first
    cdef GreenHub hub                    # a green loop's hub, which accepted sockets join


# -- core/accept.pxi ----------------------------------------------------------

cdef class DatagramBatch:
    cdef compat.fs_datagram_batch batch  # the buffers and the datagrams received into them
    cdef int count                  # datagrams received by the last fill()
    cdef int next                   # datagrams handed out since: the next one's index
    # The last receive took fewer than the batch holds: the socket was empty
    # then.  The loop waits again instead of asking once more for an EAGAIN
    # (its poller is level-triggered, so what came since still wakes it);
    # a syscall less per wake-up.  The loop clears it on each wake-up.
    cdef bint drained

    cdef bint empty(self) noexcept
    cdef int fill(self, int fd) except -1
    cdef tuple take(self, LoopPlan plan)
    cdef list leftovers(self, LoopPlan plan)


# -- core/loop.pxi ------------------------------------------------------------

cdef class AcceptGate:
    # Whether the loop polls the listener, and why not when it does not;
    # the twin's AcceptGate (fastserver/_core_py.py) has the same methods.
    cdef Poller poller                # the loop's poller, where the listener is (un)registered
    cdef int listen_fd
    cdef object connections           # OpenConnections when waiting for room can happen, else None
    cdef set open_set                 # connections.sockets
    cdef Py_ssize_t max_connections
    cdef bint listening               # the listener is registered in the poller
    cdef bint waiting_for_room        # closed at max_connections (overload "wait")
    cdef bint listener_gone           # closed for good: the listener was closed under the loop
    cdef double backoff               # the current pause after EMFILE & co; 0 after a success
    cdef double resume_at             # fs_monotonic() time at which to accept again

    cdef double wait_timeout(self, double interval) noexcept
    cdef bint reopen_if_due(self) except -1
    cdef bint full(self) except -1
    cdef bint taken(self, int status) except -1
    cdef int release(self) except -1
    cdef int _close(self) except -1


# -- core/socket_files.pxi ----------------------------------------------------

cdef class SocketReader:
    cdef object sock                # the socket read from; None once closed
    cdef char *buffer               # malloc'ed; the buffered data is buffer[start:end]
    cdef Py_ssize_t capacity        # bytes allocated at buffer
    cdef Py_ssize_t start           # where the buffered data begins
    cdef Py_ssize_t end             # where it ends: the next recv() writes here
    cdef Py_ssize_t default_capacity  # the buffer size asked for; grown buffers shrink back to it
    cdef bint is_closed             # close() was called
    cdef bint timed_out             # a recv timed out: reads fail from now on, as SocketIO's
    cdef Py_ssize_t max_line        # readline() with no size: LineTooLong beyond; -1: no limit
    cdef GreenIO green              # a green socket's, whose reads wait in the loop; else None
    # Held by every method that reads or changes the fields above, across
    # its recv() too (which runs without the GIL), as io.BufferedReader's
    # lock is: a reader shared by two threads never corrupts its buffer.
    cdef cython.pymutex lock

    cdef int _check_open(self, str message) except -1
    cdef bytes _take(self, Py_ssize_t n)
    cdef void _drained(self) noexcept
    cdef int _reserve(self, Py_ssize_t room) except -1
    cdef Py_ssize_t _fill(self, Py_ssize_t at_least) except -3
    cdef object _read_exactly(self, Py_ssize_t n)
    cdef object _read_all(self)
    cdef object _bounded_readline(self)
    cdef object _readline(self, Py_ssize_t limit)
    cdef object _readinto(self, b, bint just_once)


cdef class SocketWriter:
    cdef object sock                # the socket written to
    cdef bint is_closed             # close() was called (writes go on: the socket decides)
    cdef GreenIO green              # a green socket's, whose writes wait in the loop; else None
    # Held by write() for the whole sendall(): writes from two threads
    # sharing one wfile arrive whole, one after the other.
    cdef cython.pymutex lock

    cdef int _check_open(self) except -1


# ---------------------------------------------------------------------------
# core/green.pxi
# ---------------------------------------------------------------------------

cdef class Waiter:
    cdef object greenlet            # the parked greenlet; None when not parked
    cdef double deadline            # fs_monotonic() time it times out at; 0: never
    cdef int timer_entries          # its entries in the hub's timer heap
    cdef double timer_at            # the time of the latest of those

    cdef void clear(self) noexcept


cdef class GreenIO(Waiter):
    cdef GreenHub hub
    cdef int fd
    cdef double timeout             # the socket's: <0 none, 0 non-blocking, >0 seconds
    cdef int waiting                # READY_* the parked greenlet waits for
    cdef bint readable              # a read edge arrived since the last wait consumed one
    cdef bint writable              # the same for writes
    cdef bint drained               # the last read came back short: wait before the next
    cdef bint hangup                # the peer shut down (or an error): reads never wait again
    cdef bint watched               # registered in the hub's poller (from its first wait)
    cdef bint closed                # the socket was closed or detached

    cdef double deadline_after(self, double now) noexcept
    cdef int wait(self, int events, double deadline) except -1
    cdef int detach_from_hub(self) except -1


cdef class GreenHub:
    cdef Poller poller              # the loop's poller: connections are watched there too
    cdef Waker waker                # the loop's waker: thread work done wakes the loop
    cdef object hub_greenlet        # the loop's greenlet, every task's parent; None when stopped
    cdef unsigned long thread_ident  # the thread the hub runs in
    cdef dict ios                   # fd -> GreenIO, for the fds being watched
    cdef list timers                # heap of (deadline, seq, Waiter)
    cdef unsigned long long timer_seq
    cdef set tasks                  # greenlets spawned and not finished
    cdef object completions         # deque of Waiters whose thread work finished (any thread)
    cdef object pending             # deque of (Waiter, greenlet, wake args) to wake next
    cdef double slow_threshold      # report a greenlet holding the loop longer; 0: off
    cdef char **spare_buffers       # read buffers given back by drained green readers
    cdef int spare_count
    cdef Py_ssize_t spare_size      # the size they all have: io.DEFAULT_BUFFER_SIZE

    cpdef spawn(self, func, tuple args)
    cdef int on_ready(self, int fd, int events) except -1
    cdef double next_timeout(self, double interval) noexcept
    cdef int run_due(self) except -1
    cdef char *take_buffer(self, Py_ssize_t size) noexcept
    cdef void give_buffer(self, char *buffer, Py_ssize_t size) noexcept
    cdef object parkable(self)
    cdef bint can_park(self) except -1
    cdef int park(self, Waiter waiter, double deadline, current=*) except -1
    cdef int _add_timer(self, Waiter waiter) except -1
    cdef int wake(self, Waiter waiter, tuple args) except -1
    cdef int _switch(self, g, tuple args) except -1
