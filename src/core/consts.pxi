# The core's constants: how much the loop does per wake-up, how it backs
# off, and the codes its pieces return to each other.  Those it shares
# with the twin are read from fastserver/_contract.py at import, into C
# variables, so there is one copy.

DRAIN_BATCH = _contract.DRAIN_BATCH
cdef int _DRAIN_BATCH = DRAIN_BATCH
cdef double BACKOFF_MIN_C = _contract.BACKOFF_MIN
cdef double BACKOFF_MAX_C = _contract.BACKOFF_MAX

# What taking a request tells the loop about the listener: HANDLED,
# BACK_OFF and LISTENER_CLOSED from the contract; NOTHING_PENDING is the
# core's own: a non-blocking receive found nothing, stop draining.
cdef int HANDLED = _contract.HANDLED
cdef int BACK_OFF = _contract.BACK_OFF
cdef int LISTENER_CLOSED = _contract.LISTENER_CLOSED
cdef enum:
    NOTHING_PENDING = 3
if NOTHING_PENDING in (HANDLED, BACK_OFF, LISTENER_CLOSED):
    raise ImportError("fastserver._core: NOTHING_PENDING collides with a status of the contract")

# Most fds one wait reports; the loop registers two (listener and waker).
cdef enum:
    MAX_EVENTS = 8

# What SocketReader's reads return when a non-blocking socket had nothing.
cdef enum:
    WOULD_BLOCK = -2   # a non-blocking socket had nothing: SocketIO returns None

# The green loop's batch: ready connections taken from one wait (each one a
# greenlet switch), and what the poller's wait_events() says of each fd.
cdef enum:
    GREEN_MAX_EVENTS = 256
cdef enum:
    READY_READ = 1
    READY_WRITE = 2
    READY_HANGUP = 4   # the peer shut down or the socket has an error: reads return at once
