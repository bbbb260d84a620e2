"""What a bench is asked to do: the workloads it can measure, and the
command-line options that choose them and shape the runs.

``add_arguments()`` puts the options on any parser, so that
``python -m fastserver bench`` and ``python bench/run.py`` take the same
ones from one list and report their errors with their own names;
``complete()`` then fills in what depends on ``--quick``.  run.py's
docstring says what each row and column measures.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

#: A run during which other processes used more than this (% of one core)
#: is disturbed: it is redone (--retries) or flagged.
BUSY_LIMIT = 10
#: The row that is not a server and load but the shutdown() latency script.
SHUTDOWN_ROW = "shutdown"


@dataclass(frozen=True)
class Workload:
    """One row of the table: a server program and the load that drives it."""

    server: str          # the servers.py workload
    driver: str          # "loadgen" or "wrk"
    mode: str = ""       # loadgen mode
    concurrency: int = 1
    size: int = 64
    keepalive: bool = True  # wrk only
    server_cpus: int = 1    # 2: the server may run on both CPUs (the load's too)
    work: bool = False      # the handler burns --cpu-work-us per line (servers.py)
    #: > 0: a second loadgen (tcp-rr, one connection) keeps the server busy
    #: with lines this long while the measured one runs (the convoy row).
    busy_size: int = 0
    think_ms: float = 0     # loadgen --think-ms: a pause after each reply


WORKLOADS: dict[str, Workload] = {
    "tcp-base": Workload("tcp-base", "loadgen", "tcp-conn", 8, 6),
    "tcp-stream": Workload("tcp-stream", "loadgen", "tcp-conn", 8, 6),
    "udp-base": Workload("udp-base", "loadgen", "udp-rr", 32, 64),
    "udp-dgram": Workload("udp-dgram", "loadgen", "udp-rr", 32, 64),
    "tcp-persistent": Workload("tcp-persistent", "loadgen", "tcp-rr", 50, 64),
    "tcp-persistent-1": Workload("tcp-persistent", "loadgen", "tcp-rr", 1, 64),
    # Green handlers (fastserver.green) against the stdlib's thread per
    # connection: the stdlib column is ThreadingTCPServer, fastserver's is
    # GreenTCPServer, on the same handler.
    "green-persistent": Workload("green-persistent", "loadgen", "tcp-rr", 50, 64),
    "green-persistent-1": Workload("green-persistent", "loadgen", "tcp-rr", 1, 64),
    "http-close": Workload("http", "wrk", concurrency=10, keepalive=False),
    "http-keepalive": Workload("http", "wrk", concurrency=10, keepalive=True),
    # HTTP/1.0 on HTTPServer: http-close less a thread per request.
    "http-close-sync": Workload("http-sync", "wrk", concurrency=10, keepalive=False),
    # Each module's defaults as handlers are written (Nagle on), and the pool.
    "http-keepalive-as-is": Workload("http-as-is", "wrk", concurrency=10, keepalive=True),
    "http-close-pool": Workload("http-pool", "wrk", concurrency=10, keepalive=False),
    "green-http-keepalive": Workload("green-http", "wrk", concurrency=10, keepalive=True),
    # What free-threading buys: 4 persistent connections, ~1 ms of pure
    # Python per line, the server on one core, then allowed both.
    "threaded-cpu": Workload("threaded-cpu", "loadgen", "tcp-rr", 4, 64, work=True),
    "pool-cpu": Workload("pool-cpu", "loadgen", "tcp-rr", 4, 64, work=True),
    "threaded-cpu-2cores": Workload("threaded-cpu", "loadgen", "tcp-rr", 4, 64,
                                    server_cpus=2, work=True),
    "pool-cpu-2cores": Workload("pool-cpu", "loadgen", "tcp-rr", 4, 64,
                                server_cpus=2, work=True),
    # A trivial request's round trip while another connection is CPU-bound.
    # The probe sends a line a millisecond or so after each reply: light
    # load, so that its latency is the wait for the busy thread, not a queue.
    "convoy": Workload("convoy", "loadgen", "tcp-rr", 1, 64, server_cpus=2, work=True,
                       busy_size=256, think_ms=1),
}
#: Not in the default table: they only tell something on a free-threaded
#: build (or against one), and take a minute or more each.
OPTIONAL_WORKLOADS = ["threaded-cpu", "pool-cpu", "threaded-cpu-2cores", "pool-cpu-2cores",
                      "convoy"]
ALIASES = {"http": ["http-close", "http-close-sync", "http-keepalive", "http-keepalive-as-is",
                    "http-close-pool", "green-http-keepalive"],
           "green": ["tcp-persistent", "green-persistent", "green-persistent-1",
                     "green-http-keepalive"],
           "cpu": ["threaded-cpu", "threaded-cpu-2cores", "pool-cpu", "pool-cpu-2cores"],
           "freethreading": ["threaded-cpu", "threaded-cpu-2cores", "pool-cpu",
                             "pool-cpu-2cores", "convoy"]}
DEFAULT_WORKLOADS = [name for name in WORKLOADS if name not in OPTIONAL_WORKLOADS] + [SHUTDOWN_ROW]


def workload_names(text: str) -> list[str]:
    """argparse's type for --workloads: comma-separated names and aliases,
    as the list of workloads they name."""
    names = []
    for name in filter(None, text.split(",")):
        for real in ALIASES.get(name, [name]):
            if real not in WORKLOADS and real != SHUTDOWN_ROW:
                raise argparse.ArgumentTypeError(
                    f"unknown workload {real!r}; known: "
                    + ", ".join(DEFAULT_WORKLOADS + OPTIONAL_WORKLOADS + list(ALIASES)))
            names.append(real)
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options, on ``parser``; the parsed namespace also gets
    ``prog``, the parser's name, for the bench's own error lines."""
    parser.set_defaults(prog=parser.prog)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 run each, 1 s, 0.5 s warm-up")
    parser.add_argument("--runs", type=int, metavar="N", default=3,
                        help="runs per implementation")
    parser.add_argument("--duration", type=float, metavar="S", default=3,
                        help="measured seconds per run")
    parser.add_argument("--warmup", type=float, metavar="S", default=1,
                        help="warm-up seconds per run")
    parser.add_argument("--workloads", dest="names", metavar="LIST", type=workload_names,
                        default=",".join(DEFAULT_WORKLOADS),
                        help="comma-separated; 'http' means the http rows, 'cpu' "
                             "the four CPU-bound threaded rows, 'freethreading' "
                             "those and convoy. Default: " + ", ".join(DEFAULT_WORKLOADS)
                             + "; not by default: " + ", ".join(OPTIONAL_WORKLOADS))
    parser.add_argument("--cpu-work-us", type=float, metavar="US", default=1000,
                        help="the CPU-bound rows' work per line, in microseconds of "
                             "CPU, calibrated once per bench (default 1000)")
    parser.add_argument("--cpu-work-iterations", type=int, metavar="N", default=0,
                        help="use this burn() loop count instead of calibrating "
                             "(to repeat an earlier bench's work exactly)")
    parser.add_argument("--backlog", type=int, metavar="N", default=64,
                        help="listen() backlog of the TCP servers, both impls "
                             "(0: the classes' default, 5, which drops SYNs)")
    parser.add_argument("--quiet-wait", type=float, metavar="S", default=None,
                        help="before each run, wait up to this many seconds for "
                             "other processes to leave the cores idle "
                             "(default 20, 0 with --quick)")
    parser.add_argument("--retries", type=int, metavar="N", default=None,
                        help="redo a run disturbed by other processes (bg%% > "
                             f"{BUSY_LIMIT}) up to this many times (default 2, 0 "
                             "with --quick)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the C reference server's rows (refserver.c)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the summary and every raw run here")


def complete(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the settings whose default depends on --quick; ``args``."""
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 1, 0.5
    if args.quiet_wait is None:
        args.quiet_wait = 0 if args.quick else 20
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    return args


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None,
               description: str | None = None) -> argparse.Namespace:
    """The bench's options alone, on a parser of their own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    return complete(parser.parse_args(argv))
