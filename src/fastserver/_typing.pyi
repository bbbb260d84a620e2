# The type aliases of fastserver's annotations, named after typeshed's
# socketserver.pyi.  A stub only: modules import it under TYPE_CHECKING, so
# it is never imported at run time.
import socket
from _socket import _Address, _RetAddress

from _typeshed import ReadableBuffer
from typing_extensions import TypeAlias

#: An address a server binds to (typeshed's ``_socket._Address``).
Address: TypeAlias = _Address
#: What IP servers bind to and report (typeshed's _AfInetAddress and
#: _AfInet6Address): (host, port), or (host, port, flowinfo, scope_id).
InetAddress: TypeAlias = (
    tuple[str | bytes | bytearray, int] | tuple[str | bytes | bytearray, int, int, int]
)
#: What Unix-socket servers bind to: a path, or an abstract name.
UnixAddress: TypeAlias = str | ReadableBuffer
#: A peer's address as accept() and recvfrom() return it (typeshed: Any).
RetAddress: TypeAlias = _RetAddress
#: What a server's get_request() gives its hooks: the connected socket of a
#: stream server, ``(data, server.socket)`` for a datagram server.
RequestType: TypeAlias = socket.socket | tuple[bytes, socket.socket]
#: One received datagram as UDPServer.get_request() returns it.
Datagram: TypeAlias = tuple[tuple[bytes, socket.socket], RetAddress]
