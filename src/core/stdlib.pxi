# The Python objects the core uses, imported once: the modules, under
# private names, and the attributes the hot paths use, looked up at import
# into C variables (a C global read instead of a module attribute lookup).

import errno as _errno
import io as _io
import os as _os
import socket as _socket
import _socket as _c_socket

# The stdlib-equivalent writer for sockets the C writer does not take (an
# SSLSocket, a subclass): one class, shared with the twin.
from fastserver._core_py import SocketWriter as _PySocketWriter
from fastserver._core_py import LineTooLong as _LineTooLong, open_reader as _py_open_reader

cdef object _SHUT_WR = _socket.SHUT_WR
cdef object _plain_socket = _socket.socket
cdef object _fsdecode = _os.fsdecode
cdef object _close_fd_of = _c_socket.socket.close  # what socket._real_close() calls
cdef object _socket_timeout = _socket.timeout
cdef Py_ssize_t _DEFAULT_BUFFER_SIZE = _io.DEFAULT_BUFFER_SIZE
cdef object _IPPROTO_TCP = _socket.IPPROTO_TCP
cdef object _TCP_NODELAY = _socket.TCP_NODELAY
cdef object _BytesIO = _io.BytesIO
