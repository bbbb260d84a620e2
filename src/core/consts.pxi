# The core's constants: how much the loop does per wake-up, how it backs
# off, and the codes its pieces return to each other.  The Python-visible
# ones have the same values in the twin (fastserver/_core_py.py).

#: Requests handled per readiness before the loop waits again.
DRAIN_BATCH = 64
cdef int _DRAIN_BATCH = DRAIN_BATCH

#: get_request() errors that mean "out of a resource": the loop pauses
#: accepting for BACKOFF_MIN doubling to BACKOFF_MAX seconds.
RESOURCE_ERRNOS = frozenset((_errno.EMFILE, _errno.ENFILE, _errno.ENOBUFS, _errno.ENOMEM))
cdef double BACKOFF_MIN_C = 0.005
cdef double BACKOFF_MAX_C = 0.1
BACKOFF_MIN = BACKOFF_MIN_C
BACKOFF_MAX = BACKOFF_MAX_C

# What taking a request tells the loop about the listener.  HANDLED,
# BACK_OFF and LISTENER_CLOSED are shared with the twin; NOTHING_PENDING is
# the core's own: a non-blocking receive found nothing, stop draining.
HANDLED = 0
BACK_OFF = 1
LISTENER_CLOSED = 2
cdef enum:
    NOTHING_PENDING = 3

# Most fds one wait reports; the loop registers two (listener and waker).
cdef enum:
    MAX_EVENTS = 8

# What SocketReader's reads return when a non-blocking socket had nothing.
cdef enum:
    WOULD_BLOCK = -2   # a non-blocking socket had nothing: SocketIO returns None
