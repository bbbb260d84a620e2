"""fastserver: a C-accelerated drop-in replacement for :mod:`socketserver`.

``import fastserver as socketserver`` keeps every documented class, method,
attribute and hook of CPython 3.13's socketserver, on every supported Python,
and replaces the engine underneath: an epoll/kqueue/poll loop in a compiled
core, a wake-up fd so :meth:`BaseServer.shutdown` returns at once, and
requests drained in batches instead of one ``select`` per request.
"""
import os as _os
import socket as _socket

# Public, though not in __all__: which core serves ("c" or "python"), a
# value to read, not a name for `import *` to spread.
from ._engine import CORE_IMPLEMENTATION as CORE_IMPLEMENTATION
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

# Every public class reports the name it is imported by, as multidict's and
# aiohttp's do: a repr or a traceback says ``fastserver.TCPServer``, and a
# pickle of a class (or of a ThreadPoolStatus) names ``fastserver.X``, which
# stays loadable when a class moves between the package's modules.  Set on
# exactly what __all__ lists, so __all__ is the set of public objects whose
# __module__ is the package, as CPython's test_socketserver checks for
# socketserver.  (Not 'socketserver': pickle would find the stdlib's class
# under that name, or none.)  The price, as for those packages:
# inspect.getsource() and typing.get_type_hints() look for a class's source
# and names in this module, not in the one that defines it.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
