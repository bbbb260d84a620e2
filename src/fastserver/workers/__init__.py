"""PreforkMixIn: bind once, serve from N worker processes, supervised.

    class Server(PreforkMixIn, TCPServer):
        workers = 4

One job per module, imported one way (mixin -> supervisor -> listeners,
exits): ``mixin`` holds the public classes, ``supervisor`` forks, restarts
and stops the workers, ``listeners`` makes their SO_REUSEPORT sockets, and
``exits`` tells when a process has ended.  This module re-exports the
public names; docs/workers.md describes the feature.
"""
import os
import socket

# Public too, though not in __all__ (the classes, what `import *` gives);
# `X as X` tells mypy that they are re-exported.
from .exits import describe_exit as describe_exit
from .mixin import usable_cpu_count as usable_cpu_count
from .supervisor import MIN_UPTIME as MIN_UPTIME
from .supervisor import RESTART_DELAY_MAX as RESTART_DELAY_MAX
from .supervisor import RESTART_DELAY_MIN as RESTART_DELAY_MIN
from .supervisor import SHUTDOWN_EXIT_STATUS as SHUTDOWN_EXIT_STATUS

__all__: list[str] = []

if hasattr(os, "fork"):
    from .mixin import PreforkMixIn, PreforkTCPServer, PreforkUDPServer

    __all__ += ["PreforkMixIn", "PreforkTCPServer", "PreforkUDPServer"]

    if hasattr(socket, "AF_UNIX"):
        from .mixin import PreforkUnixDatagramServer, PreforkUnixStreamServer

        __all__ += ["PreforkUnixStreamServer", "PreforkUnixDatagramServer"]
