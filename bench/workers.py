"""PreforkMixIn on a CPU-bound handler: 1 worker vs 2 (and the stdlib).

Every request costs the handler about --work-us microseconds of pure-Python
work (calibrated once, here, then the same loop count for every server), so
one process is held back by its GIL, whatever its threads.  The rows:

  stdlib-threading    socketserver.ThreadingTCPServer, one process
  prefork-1           fastserver PreforkMixIn + ThreadingMixIn, workers = 1
  prefork-2           the same, workers = 2

(ThreadingMixIn inside the workers because the load is persistent
connections: a worker without threads would serve one connection until it
closes.)  The load is the bench's loadgen.c in tcp-rr mode: --connections
persistent connections, each sending a 64-byte line and waiting for its
echo.  Rows alternate, --runs times each; the table gives medians.

Nothing is pinned: the two workers need both cores, so the load generator
shares them with the server; its CPU share is printed (gen%).  Server CPU
is the utime + stime of the server process and its workers over the
measured window, per request.

    python bench/workers.py [--quick] [--runs 3] [--duration 3] [--warmup 1]
                            [--connections 16] [--work-us 200] [--json out.json]
"""
import argparse
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def bench_run():
    """The bench's run.py (the load generator's build, CPU accounting),
    imported by the driver only: it imports fastserver, which the stdlib's
    server process has no business loading."""
    from fastserver.bench import run

    return run


class BenchError(Exception):
    pass

#: A run during which other processes used more than this (% of one core)
#: is redone, up to --retries times: the machine may be shared.
BUSY_LIMIT = 10

ROWS = {
    "stdlib-threading": ("stdlib", 1),
    "prefork-1": ("prefork", 1),
    "prefork-2": ("prefork", 2),
}
BACKLOG = 64  # 16 connections opening at once overflow the default 5


# ---- the handler's work ------------------------------------------------------

def burn(iterations):
    """Pure-Python work that holds the GIL throughout."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def calibrate(work_us):
    """Loop iterations of burn() that take about ``work_us`` microseconds."""
    probe = 20000
    best = min(_timed(burn, probe) for _ in range(7))
    return max(1, round(probe * work_us * 1e-6 / best))


def _timed(func, arg):
    start = time.perf_counter()
    func(arg)
    return time.perf_counter() - start


# ---- the server process -------------------------------------------------------

def serve(kind, workers, iterations, ready_file):
    """The server subprocess: listen, write the port to ready_file, serve
    until SIGTERM."""
    if kind == "stdlib":
        import socketserver as module

        server_class = module.ThreadingTCPServer
    else:
        import fastserver as module
        from fastserver.workers import PreforkMixIn

        class server_class(PreforkMixIn, module.ThreadingTCPServer):
            pass

        server_class.workers = workers

    class Handler(module.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                burn(iterations)
                self.wfile.write(line)

    server_class.request_queue_size = BACKLOG
    server_class.daemon_threads = True
    server = server_class(("127.0.0.1", 0), Handler)
    if kind == "stdlib":
        # PreforkMixIn turns SIGTERM into shutdown() itself; the stdlib
        # needs it done from another thread.
        signal.signal(signal.SIGTERM,
                      lambda *_: threading.Thread(target=server.shutdown).start())
    with server:
        with open(ready_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.rename(ready_file + ".tmp", ready_file)
        server.serve_forever()
    return 0


# ---- the driver -----------------------------------------------------------------

def children_of(pid):
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return children


def tree_cpu_seconds(pid):
    """CPU time of the server and of its live workers."""
    total = 0.0
    for p in [pid] + children_of(pid):
        try:
            total += bench_run().process_cpu_seconds(p)
        except (OSError, IndexError):
            pass
    return total


def machine_busy_seconds():
    """CPU time that processes used (user, nice, system) on all CPUs, plus
    time the hypervisor took (steal), in seconds (/proc/stat).  Interrupt
    time is left out: it is mostly the kernel moving our own loopback
    packets, which per-process times may not include."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
            int(t) for t in f.readline().split()[1:9])
    return (user + nice + system + steal) / CLK_TCK


class Server:
    def __init__(self, row, iterations, tmpdir):
        kind, workers = ROWS[row]
        self.ready_file = os.path.join(tmpdir, f"{row}.port")
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 -- closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--workers", str(workers),
             "--iterations", str(iterations), "--ready-file", self.ready_file],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.port = self._wait_ready()
            # The workers are serving once they answer; wait for them to exist.
            deadline = time.monotonic() + 10
            while kind == "prefork" and len(children_of(self.proc.pid)) < workers:
                if time.monotonic() > deadline:
                    raise BenchError(f"{row}: the workers did not start")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as f:
                    return int(f.read())
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.02)
        raise BenchError(f"server not ready after {timeout} s:\n{self.output()}")

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if os.path.exists(self.ready_file):
            os.unlink(self.ready_file)
        code = self.proc.returncode
        self.log.close()
        return code


def run_loadgen(server, args):
    """One loadgen run; the server tree's CPU sampled at the window's edges."""
    cmd = [bench_run().loadgen(), "--mode", "tcp-rr", "--addr", f"127.0.0.1:{server.port}",
           "--size", "64", "--concurrency", str(args.connections),
           "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--deadline", str(args.warmup + args.duration + 15)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu_at = {}
    messages = []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            end = time.monotonic() + args.warmup + args.duration + 30
            while time.monotonic() < end:
                if not sel.select(0.5):
                    continue
                line = proc.stderr.readline()
                if not line:
                    break
                if line.strip() in ("measure-start", "measure-end"):
                    cpu_at[line.strip()] = (tree_cpu_seconds(server.proc.pid),
                                            machine_busy_seconds())
                else:
                    messages.append(line)
        out = proc.stdout.read()
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if not out.strip() or len(cpu_at) != 2:
        raise BenchError("loadgen did not finish measuring:\n" + "".join(messages))
    result = json.loads(out)
    if result["timed_out"]:
        raise BenchError("loadgen timed out:\n" + "".join(messages))
    server_cpu = cpu_at["measure-end"][0] - cpu_at["measure-start"][0]
    busy = cpu_at["measure-end"][1] - cpu_at["measure-start"][1]
    client_cpu = result["client_cpu_pct"] * result["seconds"] / 100
    result["other_cpu_pct"] = 100 * max(0.0, busy - server_cpu - client_cpu) / result["seconds"]
    result["server_cpu_pct"] = 100 * server_cpu / result["seconds"]
    result["server_us_per_op"] = 1e6 * server_cpu / result["ops"] if result["ops"] else None
    return result


def measured_run(row, iterations, args, tmpdir):
    """One run, redone while other processes disturb it (up to --retries)."""
    for attempt in range(args.retries + 1):
        result = one_run(row, iterations, args, tmpdir)
        if result["other_cpu_pct"] <= BUSY_LIMIT:
            break
        print(f"  note: {row}: other processes used {result['other_cpu_pct']:.0f}% of a "
              f"core during the run" + ("; running it again" if attempt < args.retries
                                         else "; kept, figures disturbed"), file=sys.stderr)
    return result


def one_run(row, iterations, args, tmpdir):
    if args.quiet_wait:
        bench_run().wait_for_quiet(args.quiet_wait)
    server = Server(row, iterations, tmpdir)
    try:
        result = run_loadgen(server, args)
    except BenchError as exc:
        raise BenchError(f"{row}: {exc}\nserver output:\n{server.output()}") from None
    finally:
        code = server.stop()
    if code != 0:
        raise BenchError(f"{row}: the server exited with {code} after SIGTERM")
    result["row"] = row
    return result


def summarize(runs):
    summary = {}
    for row in ROWS:
        mine = [r for r in runs if r["row"] == row]
        summary[row] = {key: statistics.median(r[key] for r in mine) for key in (
            "ops_per_sec", "p50_us", "p99_us", "server_us_per_op", "server_cpu_pct",
            "client_cpu_pct", "other_cpu_pct")}
        values = [r["ops_per_sec"] for r in mine]
        summary[row]["spread_pct"] = (100 * (max(values) - min(values)) / statistics.median(values)
                                      if len(values) > 1 else None)
        summary[row]["errors"] = sum(r["errors"] for r in mine)
        summary[row]["runs"] = len(mine)
    one, two = summary["prefork-1"]["ops_per_sec"], summary["prefork-2"]["ops_per_sec"]
    summary["ratio_2_vs_1"] = two / one if one else None
    std = summary["stdlib-threading"]["ops_per_sec"]
    summary["ratio_2_vs_stdlib"] = two / std if std else None
    return summary


def print_table(summary):
    print(f"{'server':<20}{'req/s':>10}{'spread':>8}{'p50 us':>9}{'p99 us':>9}"
          f"{'srv us/req':>12}{'srv%':>6}{'gen%':>6}{'bg%':>5}{'err':>5}")
    for row in ROWS:
        r = summary[row]
        spread = "-" if r["spread_pct"] is None else f"±{r['spread_pct'] / 2:.0f}%"
        print(f"{row:<20}{r['ops_per_sec']:>10,.0f}{spread:>8}{r['p50_us']:>9.0f}"
              f"{r['p99_us']:>9.0f}{r['server_us_per_op'] or 0:>12.1f}"
              f"{r['server_cpu_pct']:>6.0f}{r['client_cpu_pct']:>6.0f}"
              f"{r['other_cpu_pct']:>5.0f}{r['errors']:>5}")
    print(f"2 workers vs 1: {summary['ratio_2_vs_1']:.2f}x req/s; "
          f"2 workers vs the stdlib: {summary['ratio_2_vs_stdlib']:.2f}x", flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s each")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--work-us", type=float, default=200,
                        help="pure-Python work per request, in microseconds")
    parser.add_argument("--quiet-wait", type=float, default=10,
                        help="before each run, wait up to this many seconds for idle cores")
    parser.add_argument("--retries", type=int, default=2,
                        help=f"redo a run during which other processes used more than "
                             f"{BUSY_LIMIT}%% of a core, up to this many times")
    parser.add_argument("--json", help="write the summary and every run here")
    # the server subprocess
    parser.add_argument("--serve", choices=("stdlib", "prefork"), help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup, args.quiet_wait, args.retries = 1, 1, 0.5, 0, 0
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve, args.workers, args.iterations, args.ready_file)
    import fastserver

    run = bench_run()
    try:
        run.loadgen()
    except run.BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    iterations = calibrate(args.work_us)
    cpus = len(os.sched_getaffinity(0))
    print(f"PreforkMixIn bench: python {platform.python_version()}, "
          f"core={fastserver.CORE_IMPLEMENTATION}, {cpus} CPUs; "
          f"handler: {iterations} loop iterations (~{args.work_us:.0f} us of Python) per "
          f"request; tcp-rr, {args.connections} connections, 64-byte lines; "
          f"{args.runs} run(s) x {args.duration} s (+{args.warmup} s warm-up); "
          f"load average {os.getloadavg()[0]:.2f}")
    print("nothing pinned: the workers need both cores, so the load generator "
          "shares them (gen% is its CPU, bg% other processes'); medians of the runs")
    report = {"meta": {"python": platform.python_version(),
                       "core": fastserver.CORE_IMPLEMENTATION, "cpus": cpus,
                       "iterations": iterations, "work_us": args.work_us,
                       "connections": args.connections, "runs": args.runs,
                       "duration": args.duration, "warmup": args.warmup,
                       "pinned": False, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
              "runs": []}
    try:
        with tempfile.TemporaryDirectory(prefix="fastserver-workers-") as tmpdir:
            for _ in range(args.runs):
                for row in ROWS:
                    report["runs"].append(measured_run(row, iterations, args, tmpdir))
        report["summary"] = summarize(report["runs"])
        print_table(report["summary"])
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        report["error"] = str(exc)
        return 1
    finally:
        if args.json:
            with open(args.json, "w") as out:
                json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
