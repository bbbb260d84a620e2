# The Python objects the core uses, imported once: the modules, under
# private names, and the attributes the hot paths use, looked up at import
# into C variables (a C global read instead of a module attribute lookup).

import io as _io
import os as _os
import socket as _socket
import _socket as _c_socket

# The contract with the server classes (the plan, the status codes, the
# loop's constants), and the Python file objects for the connections the C
# reader and writer do not take (an SSLSocket, a subclass): leaves of the
# package, shared with the twin; never the twin itself.
from fastserver import _contract
from fastserver._streams import SocketWriter as _PySocketWriter
from fastserver._streams import open_reader as _py_open_reader
# The rules of the settings: used to name a bad one, never per request.
from fastserver._settings import blame_setting as _blame_setting
from fastserver.errors import LineTooLong as _LineTooLong

cdef object _SHUT_WR = _socket.SHUT_WR
cdef object _plain_socket = _socket.socket
cdef object _fsdecode = _os.fsdecode
cdef object _close_fd_of = _c_socket.socket.close  # what socket._real_close() calls
cdef object _socket_timeout = _socket.timeout
cdef Py_ssize_t _DEFAULT_BUFFER_SIZE = _io.DEFAULT_BUFFER_SIZE
cdef object _IPPROTO_TCP = _socket.IPPROTO_TCP
cdef object _TCP_NODELAY = _socket.TCP_NODELAY
cdef object _BytesIO = _io.BytesIO
