"""fastserver: a C-accelerated drop-in replacement for :mod:`socketserver`.

``import fastserver as socketserver`` keeps every documented class, method,
attribute and hook of CPython 3.13's socketserver, on every supported Python,
and replaces the engine underneath: an epoll/kqueue/poll loop in a compiled
core, a wake-up fd so :meth:`BaseServer.shutdown` returns at once, and
requests drained in batches instead of one ``select`` per request.
"""
import os as _os
import socket as _socket

from ._engine import CORE_IMPLEMENTATION
from ._version import __version__ as __version__
from .handlers import (
    BaseRequestHandler,
    DatagramRequestHandler,
    LineTooLong,
    StreamRequestHandler,
)
from .mixins import ThreadingMixIn
from .servers import BaseServer, TCPServer, UDPServer

# The stdlib's __all__, in the stdlib's order and under the same conditions.
__all__ = [
    "BaseServer",
    "TCPServer",
    "UDPServer",
    "ThreadingUDPServer",
    "ThreadingTCPServer",
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "ThreadingMixIn",
]

from .servers import ThreadingTCPServer, ThreadingUDPServer

if hasattr(_os, "fork"):
    from .mixins import ForkingMixIn
    from .servers import ForkingTCPServer, ForkingUDPServer

    __all__.extend(["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"])

if hasattr(_socket, "AF_UNIX"):
    from .servers import (
        ThreadingUnixDatagramServer,
        ThreadingUnixStreamServer,
        UnixDatagramServer,
        UnixStreamServer,
    )

    __all__.extend(
        [
            "UnixStreamServer",
            "UnixDatagramServer",
            "ThreadingUnixStreamServer",
            "ThreadingUnixDatagramServer",
        ]
    )
    if hasattr(_os, "fork"):
        from .servers import ForkingUnixDatagramServer, ForkingUnixStreamServer

        __all__.extend(["ForkingUnixStreamServer", "ForkingUnixDatagramServer"])

# fastserver's own names.
from .pool import (
    ThreadPoolMixIn,
    ThreadPoolStatus,
    ThreadPoolTCPServer,
    ThreadPoolUDPServer,
)

__all__ += [
    "CORE_IMPLEMENTATION",
    "LineTooLong",
    "ThreadPoolMixIn",
    "ThreadPoolStatus",
    "ThreadPoolTCPServer",
    "ThreadPoolUDPServer",
]
if hasattr(_socket, "AF_UNIX"):
    from .pool import ThreadPoolUnixDatagramServer, ThreadPoolUnixStreamServer

    __all__ += ["ThreadPoolUnixStreamServer", "ThreadPoolUnixDatagramServer"]
if hasattr(_os, "fork"):
    from .workers import PreforkMixIn, PreforkTCPServer, PreforkUDPServer

    __all__ += ["PreforkMixIn", "PreforkTCPServer", "PreforkUDPServer"]
    if hasattr(_socket, "AF_UNIX"):
        from .workers import PreforkUnixDatagramServer, PreforkUnixStreamServer

        __all__ += ["PreforkUnixStreamServer", "PreforkUnixDatagramServer"]
