# cython: language_level=3
"""fastserver's compiled core: the poller, the waker and the serve loop.

The pure-Python twin, ``fastserver/_core_py.py``, has the same interface
and behaviour; ``fastserver/_engine.py`` documents that interface and picks
one.  Python-visible behaviour (which hooks run, in which order) is decided
in the Python layer (``fastserver/_plan.py``); this module waits, takes
requests and dispatches them.  Every blocking system call runs without the
GIL.  The pieces, in the order they build on each other:

    core/waker.pxi          the wake-up fd shutdown() writes to
    core/poller.pxi         epoll / kqueue / poll(2) behind one interface
    core/request_chain.pxi  the request chain and the Plan that shortens it
    core/accept.pxi         requests off the listener as Python objects:
                            accept(2), and recvmmsg(2) or recvfrom(2)
    core/loop.pxi           serve_forever() and handle_request()'s wait
    core/socket_files.pxi   rfile and wfile for StreamRequestHandler
    core/handlers.pxi       the request handlers' setup/finish, compiled
"""
import errno as _errno
import os as _os
import socket as _socket
import _socket as _c_socket

# The stdlib-equivalent writer for sockets the C writer does not take (an
# SSLSocket, a subclass): one class, shared with the twin.
from fastserver._core_py import SocketWriter as _PySocketWriter
from fastserver._core_py import LineTooLong as _LineTooLong, open_reader as _py_open_reader

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.stdlib cimport malloc, realloc, free
from libc.stdint cimport uint64_t

# The C APIs, one namespace per header (src/includes/__init__.pxd).
from libc cimport time
from posix cimport fcntl, unistd
from includes cimport compat, epoll, errno, eventfd, kqueue, poll, socket, string

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

cdef object _SHUT_WR = _socket.SHUT_WR
cdef object _plain_socket = _socket.socket
cdef object _fsdecode = _os.fsdecode

include "core/waker.pxi"
include "core/poller.pxi"
include "core/request_chain.pxi"
include "core/accept.pxi"
include "core/loop.pxi"
include "core/socket_files.pxi"
include "core/handlers.pxi"
