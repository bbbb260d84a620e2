# cython: language_level=3
"""fastserver's compiled core: the poller, the waker and the serve loop.

The pure-Python twin, ``fastserver/_core_py.py``, has the same interface
and behaviour; ``fastserver/_contract.py`` writes down what both share
(the plan, the status codes, the constants, read from there at import),
and ``fastserver/_engine.py`` picks one.  Python-visible behaviour (which
hooks run, in which order) is decided in the Python layer
(``fastserver/_plan.py``); this module waits, takes requests and
dispatches them.  Every blocking system call runs without the
GIL.  The pieces, in the order they build on each other:

    core/waker.pxi      the wake-up fd shutdown() writes to
    core/poller.pxi     epoll / kqueue / poll(2) behind one interface
    core/sockaddr.pxi   accept(2) and recvfrom(2) into Python objects
    core/dispatch.pxi   the request chain, and the plan that shortens it in C fields
    core/loop.pxi       serve_forever() and handle_request()'s wait
    core/stream.pxi     rfile and wfile for StreamRequestHandler
    core/handlers.pxi   the request handlers' setup/finish, compiled
"""
import os as _os
import socket as _socket
import _socket as _c_socket

# The contract with the server classes (the plan, the status codes, the
# loop's constants) and the Python stream objects for the connections the
# C reader and writer do not take: leaves of the package, never the twin.
from fastserver import _contract
from fastserver._streams import SocketWriter as _PySocketWriter
from fastserver._streams import open_reader as _py_open_reader
from fastserver.errors import LineTooLong as _LineTooLong

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.stdlib cimport malloc, realloc, free

from includes.system cimport *

DRAIN_BATCH = _contract.DRAIN_BATCH
cdef int _DRAIN_BATCH = DRAIN_BATCH
cdef double BACKOFF_MIN_C = _contract.BACKOFF_MIN
cdef double BACKOFF_MAX_C = _contract.BACKOFF_MAX
cdef int HANDLED = _contract.HANDLED
cdef int BACK_OFF = _contract.BACK_OFF
cdef int LISTENER_CLOSED = _contract.LISTENER_CLOSED

cdef object _SHUT_WR = _socket.SHUT_WR
cdef object _plain_socket = _socket.socket
cdef object _fsdecode = _os.fsdecode

include "core/waker.pxi"
include "core/poller.pxi"
include "core/dispatch.pxi"
include "core/sockaddr.pxi"
include "core/loop.pxi"
include "core/stream.pxi"
include "core/handlers.pxi"
