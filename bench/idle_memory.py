"""Memory and threads per idle connection, stdlib threads against green
handlers, from a checkout: ``python bench/idle_memory.py [--connections 10000]``.

The code is the package's, fastserver/bench/idle_memory.py.
"""
import sys

from fastserver.bench.idle_memory import main

if __name__ == "__main__":
    sys.exit(main())
