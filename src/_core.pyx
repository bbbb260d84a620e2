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

    core/stdlib.pxi         the Python modules and attributes it uses, looked up once
    core/consts.pxi         its constants: batch size, back-off, status codes,
                            read from fastserver/_contract.py
    core/waker.pxi          the wake-up fd shutdown() writes to
    core/poller.pxi         epoll / kqueue / poll(2) behind one interface
    core/request_chain.pxi  the request chain, and the plan that shortens it in C fields
    core/accept.pxi         requests off the listener as Python objects:
                            accept(2), and recvmmsg(2) or recvfrom(2)
    core/loop.pxi           serve_forever() and handle_request()'s wait
    core/socket_files.pxi   rfile and wfile for StreamRequestHandler
    core/green.pxi          green handlers: greenlets switched by the loop,
                            and the sockets whose waits park them there
    core/handlers.pxi       the request handlers' setup/finish, compiled

The classes' fields and C methods are declared in ``fastserver/_core.pxd``
(where Cython looks for this module's declarations), the C APIs in
``includes/``, one .pxd per header.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdlib cimport malloc, realloc, free
from libc.stdint cimport uint64_t

# The C APIs, one namespace per header (src/includes/__init__.pxd).
from libc cimport time
from posix cimport fcntl, unistd
from includes cimport compat, epoll, errno, eventfd, greenlet, kqueue, poll, socket, string

include "core/stdlib.pxi"
include "core/consts.pxi"

include "core/waker.pxi"
include "core/poller.pxi"
include "core/request_chain.pxi"
include "core/accept.pxi"
include "core/loop.pxi"
include "core/socket_files.pxi"
include "core/green.pxi"
include "core/handlers.pxi"
