"""Instructions per request, stdlib vs fastserver, counted by callgrind.

Wall time drifts with machine load and these machines have no hardware
counters; valgrind's instruction counts do not drift.  For each workload and
implementation this runs bench/servers.py under ``valgrind --tool=callgrind``
twice, once serving no requests and once serving ``--ops`` requests driven
by the bench's load generator, and reports (Ir(ops) - Ir(0)) / ops: the server's
instructions per request, start-up and shutdown excluded.  Use it to tune a
hot path; quote bench/run.py for speed.

    python bench/instructions.py [--workloads tcp-base,udp-base] [--ops 2000]
        [--keep DIR]   # keep the callgrind.out files for callgrind_annotate
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from fastserver.bench import c_programs, run

MODES = {  # workload -> loadgen arguments
    "tcp-base": ["--mode", "tcp-conn", "--size", "6", "--concurrency", "1"],
    "tcp-stream": ["--mode", "tcp-conn", "--size", "6", "--concurrency", "1"],
    "udp-base": ["--mode", "udp-rr", "--size", "64", "--concurrency", "1"],
    "udp-dgram": ["--mode", "udp-rr", "--size", "64", "--concurrency", "1"],
    "tcp-persistent": ["--mode", "tcp-rr", "--size", "64", "--concurrency", "1"],
    # 50 connections: the thread hand-off (stdlib) against the greenlet
    # switch (fastserver's green handlers).
    "green-persistent": ["--mode", "tcp-rr", "--size", "64", "--concurrency", "50"],
}


def run_server(loadgen, impl, workload, ops, out_file):
    """Start the server under callgrind, drive ``ops`` requests, stop it;
    return the total instruction count."""
    ready = out_file + ".port"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
         *run.SERVERS, "--impl", impl,
         "--workload", workload, "--ready-file", ready, "--backlog", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(ready):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {server.stderr.read()}")
            time.sleep(0.1)
        with open(ready) as ready_file:
            port = ready_file.read().strip()
        if ops:
            subprocess.run(
                [loadgen, *MODES[workload], "--addr", f"127.0.0.1:{port}", "--ops", str(ops),
                 "--warmup", "0", "--timeout-ms", "5000", "--deadline", "600"],
                check=True, stdout=subprocess.DEVNULL, timeout=900,
            )
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with open(out_file) as counts:
        match = re.search(r"^(?:summary|totals):\s*(\d+)", counts.read(), re.M)
    return int(match.group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="tcp-base,tcp-stream,udp-base,udp-dgram")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--keep", help="directory to keep the callgrind.out files in")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    try:
        loadgen = c_programs.build(c_programs.LOADGEN)
    except c_programs.BuildError as exc:
        sys.exit(str(exc))
    workdir = args.keep or tempfile.mkdtemp(prefix="fastserver-callgrind-")
    os.makedirs(workdir, exist_ok=True)
    print(f"instructions per request (callgrind), {args.ops} requests, "
          f"python {sys.version.split()[0]}")
    print(f"{'workload':<16}{'stdlib':>12}{'fastserver':>12}{'ratio':>8}")
    for workload in args.workloads.split(","):
        per_op = {}
        for impl in ("stdlib", "fastserver"):
            base = os.path.join(workdir, f"{workload}-{impl}")
            idle = run_server(loadgen, impl, workload, 0, base + ".idle.out")
            busy = run_server(loadgen, impl, workload, args.ops, base + ".out")
            per_op[impl] = (busy - idle) / args.ops
        ratio = per_op["fastserver"] / per_op["stdlib"]
        print(f"{workload:<16}{per_op['stdlib']:>12,.0f}{per_op['fastserver']:>12,.0f}{ratio:>8.2f}",
              flush=True)
    if not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
