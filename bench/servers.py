"""The bench's server programs, from a checkout: ``python bench/servers.py
--impl stdlib|fastserver --workload NAME`` (``--help`` lists the options).

The code is the package's, fastserver/bench/servers.py, whose docstring
describes the workloads.
"""
import sys

from fastserver.bench.servers import main

if __name__ == "__main__":
    sys.exit(main())
