"""The long part of the survival battery: what is too slow for the test
suite but must hold before a release.

1. **1,000,000 requests per flavour.**  Each server flavour (sync,
   threading, forking, thread pool, multi-core workers) serves in a child
   process of its own; the bench's loadgen.c (a C client, built on first
   use) sends the requests -- one TCP connection per request, a 64-byte
   line echoed -- in rounds of 100,000.  After a warm-up and after every round the
   server's process is measured: fds, threads, child processes (and the
   workers' fds and RSS), RSS, objects the garbage collector tracks.  It
   passes when every request was answered and, at the end, fds, threads
   and children are what they were after the warm-up and RSS grew by less
   than 5 %.
2. **10,000 idle connections.**  A threading server (one thread per
   connection) gets 10,000 connections that each sent one byte of a
   request and then nothing; a new client must then be served within
   100 ms (20 tries: the median and the worst are printed).

Duration, measured on the 2-core development machine (CPython 3.11,
compiled core): sync ~2 min, threading ~4 min, thread pool ~3 min, workers
~2 min, forking ~15 min (a fork per request), the idle test ~1 min: about
27 minutes for everything.  ``--requests`` makes it shorter;
``--flavours`` and ``--skip-idle`` pick parts.

    python bench/soak.py                       # everything, compiled core
    python bench/soak.py --core py             # on the pure-Python twin
    python bench/soak.py --requests 100000 --flavours sync,threading
    python bench/soak.py --json soak.json      # and keep the figures

It prints one line per round and a summary table; exit status 1 if a check
failed.
"""
import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(REPO, "tests"))

import fastserver  # noqa: E402
from fastserver.bench import run as bench_run  # noqa: E402  (builds the load generator)

import hostile_util as hu  # noqa: E402
from util import short_tmpdir  # noqa: E402

ROUND = 100_000
WARMUP = 10_000
LINE_SIZE = 64
RSS_GROWTH_LIMIT = 0.05
IDLE_CONNECTIONS = 10_000
IDLE_LATENCY_LIMIT = 0.1
VARIANTS = {"c": "c-epoll", "py": "py"}


def drive(address, requests, concurrency=8):
    """``requests`` TCP connection-per-request echoes; loadgen's report."""
    run = subprocess.run(
        [bench_run.loadgen(), "--mode", "tcp-conn", "--addr", "%s:%d" % tuple(address),
         "--ops", str(requests), "--warmup", "0", "--size", str(LINE_SIZE),
         "--concurrency", str(concurrency), "--deadline", "7200"],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        raise RuntimeError("loadgen failed: %s %s" % (run.stdout, run.stderr))
    return json.loads(run.stdout)


def say(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------
# 1,000,000 requests per flavour
# ---------------------------------------------------------------------------


def soak_flavour(variant, flavour, requests, tmpdir):
    """Serve ``requests`` requests after a warm-up; the figures and checks."""
    reports = hu.Reports()
    spec = {"flavour": flavour, "transport": "tcp", "tmpdir": tmpdir, "in_child": True,
            "report_fd": reports.fd, "handler": {"kind": "stream"}, "server": {}}
    served = errors = 0
    started = time.monotonic()
    try:
        with hu.BatteryServer(fastserver, variant, spec) as server:
            drive(server.address, WARMUP)
            before = server.leak_snapshot()
            say("  %-9s warm-up done: %s" % (flavour, brief(before)))
            rounds = []
            while served < requests:
                batch = min(ROUND, requests - served)
                t0 = time.monotonic()
                result = drive(server.address, batch)
                served += result["ops"]
                errors += result["errors"]
                snapshot = server.leak_snapshot()
                rounds.append({"served": served, "seconds": time.monotonic() - t0,
                               "ops_per_sec": result["ops_per_sec"], **snapshot})
                say("  %-9s %8d requests  %7.0f/s  %s" % (
                    flavour, served, result["ops_per_sec"], brief(snapshot)))
            after = settle(server, before)
        handler_errors = reports.drain()
    finally:
        reports.close()
    checks = leak_checks(before, after)
    checks["every request answered"] = served == requests and errors == 0
    checks["no handle_error()"] = not handler_errors
    return {
        "flavour": flavour, "variant": variant, "requests": served, "errors": errors,
        "seconds": round(time.monotonic() - started, 1), "before": before, "after": after,
        "rss_growth_pct": round(100.0 * (after["rss"] - before["rss"]) / before["rss"], 2),
        "rounds": rounds, "checks": checks, "ok": all(checks.values()),
    }


def settle(server, before, timeout=10.0):
    """The last snapshot, once per-request threads have ended."""
    deadline = time.monotonic() + timeout
    snapshot = server.leak_snapshot()
    while snapshot["threads"] != before["threads"] and time.monotonic() < deadline:
        time.sleep(0.1)
        snapshot = server.leak_snapshot()
    return snapshot


def leak_checks(before, after):
    checks = {
        "fds back": after["fds"] == before["fds"],
        "threads back": after["threads"] == before["threads"],
        "children back": after["children"] == before["children"],
        "RSS < +5 %": after["rss"] < before["rss"] * (1 + RSS_GROWTH_LIMIT),
    }
    lasting = before["child_processes"]
    if lasting:  # the workers: the same processes, equally lean
        checks["workers kept"] = after["child_processes"].keys() == lasting.keys()
        checks["workers' fds and RSS"] = checks["workers kept"] and all(
            after["child_processes"][pid]["fds"] == child["fds"]
            and after["child_processes"][pid]["rss"] < child["rss"] * (1 + RSS_GROWTH_LIMIT)
            for pid, child in lasting.items())
    return checks


def brief(snapshot):
    text = "fds %d threads %d children %d RSS %.1f MB objects %d" % (
        snapshot["fds"], snapshot["threads"], snapshot["children"],
        snapshot["rss"] / 2**20, snapshot["objects"])
    for pid, child in sorted(snapshot["child_processes"].items()):
        text += " | worker %s: fds %d RSS %.1f MB" % (pid, child["fds"], child["rss"] / 2**20)
    return text


# ---------------------------------------------------------------------------
# 10,000 idle connections
# ---------------------------------------------------------------------------


def soak_idle(variant, connections, tmpdir):
    """A threading server holding ``connections`` idle connections: how
    long a new client waits for its answer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit("RLIMIT_NOFILE hard limit %d < %d: raise it (ulimit -Hn)" % (hard, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    reports = hu.Reports()
    spec = {"flavour": "threading", "transport": "tcp", "tmpdir": tmpdir, "in_child": True,
            "report_fd": reports.fd, "handler": {"kind": "stream"}, "nofile": wanted,
            "server": {"request_queue_size": 4096}}
    idle = []
    started = time.monotonic()
    try:
        # Stopping joins one handler thread per connection: give it time.
        with hu.BatteryServer(fastserver, variant, spec, stop_timeout=600) as server:
            t0 = time.monotonic()
            for _ in range(connections):
                client = socket.create_connection(server.address, timeout=30)
                client.sendall(b"G")  # one byte of a request, then nothing
                idle.append(client)
            opened = time.monotonic() - t0
            deadline = time.monotonic() + 120
            while hu.thread_count(server.pid) < connections and time.monotonic() < deadline:
                time.sleep(0.1)
            held = hu.thread_count(server.pid) - 2  # not its main thread and loop
            say("  idle      %d connections open in %.1f s; handler threads %d, RSS %.1f MB"
                % (connections, opened, held, hu.rss_bytes(server.pid) / 2**20))
            latencies = []
            for i in range(20):
                t0 = time.monotonic()
                reply = hu.exchange("tcp", server.address, b"new client %d\n" % i)
                latencies.append(time.monotonic() - t0)
                assert reply == b"new client %d\n" % i, reply
                time.sleep(0.05)
            say("  idle      a new client served in %.1f ms median, %.1f ms worst of 20"
                % (1000 * statistics.median(latencies), 1000 * max(latencies)))
            t0 = time.monotonic()
            for client in idle:
                client.close()
            idle = []
        say("  idle      the server took %.1f s to end its %d handler threads and stop"
            % (time.monotonic() - t0, held))
    finally:
        for client in idle:
            client.close()
        reports.close()
    return {
        "connections": connections, "variant": variant, "seconds_to_open": round(opened, 1),
        "handler_threads": held, "latency_median_ms": round(1000 * statistics.median(latencies), 2),
        "latency_max_ms": round(1000 * max(latencies), 2),
        "seconds": round(time.monotonic() - started, 1),
        "ok": max(latencies) < IDLE_LATENCY_LIMIT and held >= connections,
    }


# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="per flavour")
    parser.add_argument("--flavours", default=",".join(hu.FLAVOURS),
                        help="comma-separated (default: all); '' for none")
    parser.add_argument("--core", choices=sorted(VARIANTS), default="c")
    parser.add_argument("--idle", type=int, default=IDLE_CONNECTIONS,
                        help="idle connections (0: skip that part)")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    variant = VARIANTS[args.core]
    say("soak: %s, %s core, %d requests per flavour (rounds of %d after a %d warm-up)"
        % (sys.version.split()[0], args.core, args.requests, ROUND, WARMUP))
    results = {"python": sys.version.split()[0], "core": args.core, "flavours": [], "idle": None}
    started = time.monotonic()
    with short_tmpdir() as tmpdir:
        for flavour in filter(None, args.flavours.split(",")):
            try:
                hu.flavour_mixin(fastserver, flavour)
            except BaseException as exc:  # pytest's Skipped: the flavour is not here
                say("  %-9s skipped: %s" % (flavour, exc))
                continue
            results["flavours"].append(soak_flavour(variant, flavour, args.requests, tmpdir))
        if args.idle and not args.skip_idle:
            results["idle"] = soak_idle(variant, args.idle, tmpdir)
    results["seconds"] = round(time.monotonic() - started, 1)
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    ok = all(r["ok"] for r in results["flavours"]) and (results["idle"] or {"ok": True})["ok"]
    return 0 if ok else 1


def report(results):
    say("")
    say("%-9s %9s %6s %7s  %-11s %-11s %-9s %-17s %s" % (
        "flavour", "requests", "errors", "seconds", "fds", "threads", "children",
        "RSS MB (growth)", "result"))
    for r in results["flavours"]:
        b, a = r["before"], r["after"]
        failed = [name for name, ok in r["checks"].items() if not ok]
        say("%-9s %9d %6d %7.0f  %-11s %-11s %-9s %-17s %s" % (
            r["flavour"], r["requests"], r["errors"], r["seconds"],
            "%d -> %d" % (b["fds"], a["fds"]), "%d -> %d" % (b["threads"], a["threads"]),
            "%d -> %d" % (b["children"], a["children"]),
            "%.1f -> %.1f (%+.2f %%)" % (b["rss"] / 2**20, a["rss"] / 2**20, r["rss_growth_pct"]),
            "ok" if r["ok"] else "FAILED: " + ", ".join(failed)))
    idle = results["idle"]
    if idle:
        say("idle: %d connections (opened in %.0f s, %d handler threads); a new client "
            "served in %.1f ms median, %.1f ms worst of 20: %s" % (
                idle["connections"], idle["seconds_to_open"], idle["handler_threads"],
                idle["latency_median_ms"], idle["latency_max_ms"],
                "ok" if idle["ok"] else "FAILED (limit 100 ms)"))
    say("soak: %.0f s in all" % results["seconds"])


if __name__ == "__main__":
    sys.exit(main())
