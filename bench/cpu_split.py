"""Where a server's CPU goes: user space against the kernel, per operation.

    python bench/cpu_split.py [--workloads tcp-base,udp-base] [--duration 3]

bench/run.py reports the server's total CPU per operation; this splits it
into utime (the interpreter, the core, the handler) and stime (the
kernel: accept, the TCP handshake and teardown, send, receive, epoll), read
from /proc/PID/stat at loadgen's measure-start and measure-end, with the
same servers, pinning and load generator as bench/run.py.  It shows what
bounds a ratio: the kernel's share is the same work for both modules, so
it sets a floor under fastserver/stdlib that no user-space change lowers.
The c-reference row (bench/refserver.c, no Python) shows that floor
measured directly: the kernel's work for the workload and nothing else.
"""
import argparse
import json
import subprocess
import sys
import tempfile

from fastserver.bench import options, run


def cpu_times(pid):
    """(utime, stime) of ``pid`` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / run.CLK_TCK, int(fields[12]) / run.CLK_TCK


def measure(impl, name, duration, tmpdir):
    spec = options.WORKLOADS[name]
    server = run.Server(impl, spec.server, tmpdir, backlog=64)
    try:
        cmd = ["taskset", "-c", run.CLIENT_CPU, run.loadgen(), "--mode", spec.mode,
               "--addr", f"127.0.0.1:{server.port}", "--size", str(spec.size),
               "--concurrency", str(spec.concurrency), "--duration", str(duration),
               "--warmup", "1", "--deadline", str(duration + 20)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        start = end = None
        for line in proc.stderr:
            if line.strip() == "measure-start":
                start = cpu_times(server.proc.pid)
            elif line.strip() == "measure-end":
                end = cpu_times(server.proc.pid)
        result = json.loads(proc.stdout.read())
        proc.wait()
    finally:
        server.stop()
    ops = result["ops"]
    user, kernel = ((e - s) * 1e6 / ops for s, e in zip(start, end))
    return user, kernel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads",
                        default="tcp-base,tcp-stream,udp-base,udp-dgram,tcp-persistent")
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    run.pick_cpus()
    run.loadgen()
    run.refserver()
    print(f"{'workload':<16}{'impl':<12}{'user us/op':>11}{'kernel us/op':>13}{'kernel %':>9}")
    with tempfile.TemporaryDirectory() as tmpdir:
        for name in args.workloads.split(","):
            impls = run.IMPLS
            if options.WORKLOADS[name].server in run.REFERENCE_SERVERS:
                impls += (run.REFERENCE,)
            for impl in impls:
                samples = sorted(
                    (measure(impl, name, args.duration, tmpdir) for _ in range(args.runs)),
                    key=sum)
                user, kernel = samples[len(samples) // 2]  # the run with the median total
                kernel_pct = 100 * kernel / (user + kernel)
                print(f"{name:<16}{impl:<12}{user:>11.1f}{kernel:>13.1f}{kernel_pct:>8.0f}%",
                      flush=True)


if __name__ == "__main__":
    sys.exit(main())
