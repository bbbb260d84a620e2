"""shutdown() latency, stdlib against fastserver, from a checkout:
``python bench/shutdown_latency.py [--trials 21] [--poll-interval 0.5]``.

The code is the package's, fastserver/bench/shutdown_latency.py.
"""
from fastserver.bench.shutdown_latency import main

if __name__ == "__main__":
    main()
