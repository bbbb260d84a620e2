"""Memory and threads per idle connection: the stdlib's thread per
connection against fastserver's green handlers.

Starts each server (servers.py's green-persistent workload: the stdlib's
ThreadingTCPServer, fastserver's GreenTCPServer, the same line-echo
handler), opens ``--connections`` connections that send nothing, waits
until the server holds them all, and reads the server's resident memory
and thread count from /proc; then one more client sends a line and the
time to its answer is taken.  Prints one row per server and the ratio
(fastserver/stdlib) of the memory the idle connections added.

    python -m fastserver.bench.idle_memory --connections 10000

Linux only (/proc).  Each side holds one fd per connection: the
connection count is capped below the open-file limit (raised to its hard
limit for this process and the servers it starts).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

SERVERS = [sys.executable, "-m", "fastserver.bench.servers"]
IMPLS = ("stdlib", "fastserver")


def status_of(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def socket_fds(pid: int) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def start_server(impl: str, tmpdir: str, backlog: int) -> tuple[subprocess.Popen[bytes], int]:
    ready = os.path.join(tmpdir, f"{impl}.port")
    proc = subprocess.Popen([*SERVERS, "--impl", impl, "--workload", "green-persistent",
                             "--port", "0", "--ready-file", ready, "--backlog", str(backlog)],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{impl} server did not start")
        time.sleep(0.02)
    with open(ready) as f:
        return proc, int(f.read())


def measure(impl: str, connections: int, tmpdir: str, timeout: float) -> dict[str, Any]:
    proc, port = start_server(impl, tmpdir, backlog=min(connections, 4096))
    idle: list[socket.socket] = []
    try:
        time.sleep(0.2)
        base = status_of(proc.pid)
        base_sockets = socket_fds(proc.pid)
        started = time.monotonic()
        for _ in range(connections):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        # Accepted and handed to a handler: one socket fd each in the server.
        deadline = time.monotonic() + timeout
        while socket_fds(proc.pid) < base_sockets + connections:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{impl}: the server took only "
                                   f"{socket_fds(proc.pid) - base_sockets} connections")
            time.sleep(0.05)
        accepted_s = time.monotonic() - started
        time.sleep(0.5)  # let the handlers reach their first read
        held = status_of(proc.pid)
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
            client.sendall(b"one more\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = client.recv(64)
                if not chunk:
                    break
                reply += chunk
        new_client_ms = (time.monotonic() - t0) * 1e3
        if reply != b"one more\n":
            raise RuntimeError(f"{impl}: the new client got {reply!r}")
    finally:
        for sock in idle:
            sock.close()
        stop_started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_s = time.monotonic() - stop_started
    added_kib = held["VmRSS"] - base["VmRSS"]
    return {"impl": impl, "connections": connections,
            "rss_before_kib": base["VmRSS"], "rss_kib": held["VmRSS"],
            "kib_per_connection": added_kib / connections,
            "threads": held["Threads"], "accept_all_s": accepted_s,
            "new_client_ms": new_client_ms, "stop_s": stop_s}


def raise_fd_limit() -> int:
    """The open-file limit, raised to its hard limit (the servers started
    from here inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    limit = raise_fd_limit()
    if args.connections + 100 > limit:
        parser.error(f"--connections {args.connections} needs an open-file limit above "
                     f"{args.connections + 100}; this process may have {limit}")
    with tempfile.TemporaryDirectory() as tmpdir:
        rows = [measure(impl, args.connections, tmpdir, args.timeout) for impl in IMPLS]
    print(f"{'impl':<12}{'conns':>7}{'RSS MiB':>9}{'KiB/conn':>10}{'threads':>9}"
          f"{'accept s':>10}{'new client ms':>15}{'stop s':>8}")
    for row in rows:
        print(f"{row['impl']:<12}{row['connections']:>7}{row['rss_kib'] / 1024:>9.1f}"
              f"{row['kib_per_connection']:>10.1f}{row['threads']:>9}"
              f"{row['accept_all_s']:>10.2f}{row['new_client_ms']:>15.1f}{row['stop_s']:>8.2f}")
    std, green = rows
    ratio = green["kib_per_connection"] / std["kib_per_connection"]
    print(f"fastserver (green) / stdlib (threads): {ratio:.2f}x the memory per idle "
          "connection")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "ratio_kib_per_connection": ratio}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
