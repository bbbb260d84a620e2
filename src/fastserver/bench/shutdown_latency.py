"""How long does ``shutdown()`` take?  stdlib socketserver vs fastserver.

The stdlib's serve_forever notices a shutdown request only when its
``select`` returns, so shutdown() waits out the rest of ``poll_interval``
(0.5 s by default: ~250 ms on average).  fastserver's loop is woken by its
waker at once.  Each trial starts serve_forever in a thread, waits a random
fraction of poll_interval so the stdlib is caught at every phase of its poll,
and times shutdown().  Both run in this one process, alternating.

    python -m fastserver.bench.shutdown_latency [--trials 21] [--poll-interval 0.5]
    python bench/shutdown_latency.py ...       # the same, from a checkout
"""
from __future__ import annotations

import argparse
import json
import random
import socketserver
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import fastserver


def one_trial(module: ModuleType, poll_interval: float, rng: random.Random) -> float:
    server = module.TCPServer(("127.0.0.1", 0), module.BaseRequestHandler)
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,))
    thread.start()
    time.sleep(0.02 + rng.random() * poll_interval)
    start = time.perf_counter()
    server.shutdown()
    elapsed = time.perf_counter() - start
    thread.join()
    server.server_close()
    return elapsed


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=21)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    rng = random.Random(1)
    samples: dict[str, list[float]] = {"stdlib": [], "fastserver": []}
    for _ in range(args.trials):
        samples["stdlib"].append(one_trial(socketserver, args.poll_interval, rng))
        samples["fastserver"].append(one_trial(fastserver, args.poll_interval, rng))

    result: dict[str, Any] = {
        "poll_interval": args.poll_interval,
        "trials": args.trials,
        "core": fastserver.CORE_IMPLEMENTATION,
        "python": sys.version.split()[0],
    }
    print(f"shutdown() latency, poll_interval={args.poll_interval}s, "
          f"{args.trials} trials each, fastserver core={fastserver.CORE_IMPLEMENTATION}")
    print(f"{'server':<12}{'median ms':>12}{'p90 ms':>10}{'max ms':>10}")
    for name, values in samples.items():
        values.sort()
        median = statistics.median(values) * 1e3
        p90 = values[int(0.9 * (len(values) - 1))] * 1e3
        print(f"{name:<12}{median:>12.3f}{p90:>10.3f}{values[-1] * 1e3:>10.3f}")
        result[name] = {"median_ms": median, "p90_ms": p90, "max_ms": values[-1] * 1e3}
    ratio = result["stdlib"]["median_ms"] / result["fastserver"]["median_ms"]
    print(f"fastserver is {ratio:,.0f}x faster to shut down (median)")
    result["speedup"] = ratio
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return result


if __name__ == "__main__":
    main()
