"""The benchmark suite: the stdlib's socketserver against fastserver.

``python -m fastserver bench`` runs it from an installed package, and
``python bench/run.py`` from a checkout; both run these modules:

- ``run.py``: the suite (servers and load pinned to their CPUs, each
  server's CPU time per operation, the table and the JSON report);
- ``servers.py``: the server programs, one workload on either module;
- ``shutdown_latency.py``: the shutdown() row;
- ``c_programs.py``: the C load generator and reference server
  (``loadgen.c``, ``refserver.c``), compiled on first use into a cache;
- ``plot.py``: the chart of a report (matplotlib).

Nothing else in fastserver imports this package.
"""
