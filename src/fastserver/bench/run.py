"""The fastserver bench: stdlib socketserver vs fastserver, one command.

For each workload it starts a server (servers.py) pinned to CPU 0 and
drives it with a load generator pinned to CPU 1: loadgen.c (compiled on
first use, c_programs.py) or, for HTTP, ``wrk``.  Runs
alternate stdlib, fastserver, stdlib, fastserver, ... (--runs each).  Over
the measured window (after a warm-up) it reads the server's utime+stime from
/proc/PID/stat, so besides throughput and latency it reports the server's
CPU time per operation, which tells fast servers apart even where the
client's core is the limit.  It prints the median of the runs per
implementation, the spread of the runs, and the fastserver/stdlib ratios;
--json writes every raw run too.  The ``shutdown`` row runs
shutdown_latency.py.

What free-threading buys: rows not in the default table (they tell
something only on, or against, a free-threaded build, and take a few
minutes), ``--workloads freethreading`` (or ``cpu`` for the first four):

  threaded-cpu, pool-cpu     4 persistent connections (loadgen tcp-rr), each
                             line costs the handler ~1 ms of pure Python
                             (servers.py's burn() loop), on ThreadingTCPServer,
                             and on fastserver's ThreadPoolTCPServer (the
                             stdlib's row: ThreadingTCPServer); server on CPU 0
  threaded-cpu-2cores,       the same with the server allowed both CPUs; the
  pool-cpu-2cores            load generator stays on the second, where it needs
                             a few per cent of the core (gen%): both modules
                             face the same client, srv% says how much of the
                             two cores the server used, and a ``scaling`` line
                             gives each module's 2-core over 1-core ops/s
  convoy                     one connection's trivial round trips (tcp-rr, a
                             line ~1 ms after each reply) on a ThreadingTCPServer
                             allowed both CPUs, while a second loadgen keeps
                             another connection's handler computing (~20 ms a
                             line): p50/p99 is how long a trivial request waits
                             for a CPU-bound thread (on a GIL build, the GIL's
                             switch interval: the convoy effect); srv us/op is
                             left out, the busy connection's CPU being most of it

The loop count is calibrated once per bench, on the server's CPU after
waiting for quiet, to --cpu-work-us of CPU (default 1000), and every server
of the bench gets the same count; --cpu-work-iterations N fixes it instead.
The JSON lists each server thread's CPU over the window
(server_thread_cpu_pct), busiest first.

    python -m fastserver bench [--plot FILE.png] [--quick] [--runs 3]
        [--duration 3] [--warmup 1] [--workloads tcp-base,udp-base,...]
        [--json out.json] [--backlog 64] [--quiet-wait 20] [--retries 2]
        [--no-reference] [--cpu-work-us 1000] [--cpu-work-iterations N]

``--quick`` is one run each of 1 s: a smoke test
(``python -m fastserver bench --quick --workloads tcp-base,udp-base`` takes
~10 s).  From a checkout, ``python bench/run.py`` runs the same suite.

Columns: ops/s, p50/p99 latency (from the load generator), srv us/op (server
CPU per operation, the figure to compare), spread (± half the range of srv
us/op over the runs), srv% and gen% (server's and load generator's CPU, in %
of a core: gen% near 100 means the client, not the server, set the pace),
bg% (CPU that anything else used on the two cores during the window: the
machine may be shared; a run with bg% above 10 is redone, up to --retries
times, after waiting up to --quiet-wait s for idle cores, and flagged if
still disturbed), err (errors),
and the fastserver/stdlib ratios of srv us/op (lower is better) and ops/s.

The loadgen workloads also run on refserver.c, a single-threaded C
epoll server that makes only the system calls the workload needs (no
Python): its row is the floor, the kernel's share of the work, and the
"÷ C" column gives each module's srv us/op over it.  --no-reference skips
it.

The TCP servers get a listen() backlog of 64 (--backlog; the classes'
default is 5): 8 to 50 connections opening at once overflow a backlog of 5,
the kernel drops SYNs and each drop stalls a client for the 1 s SYN
retransmission timer, which would measure the timer, not the server.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, Optional

import fastserver

from . import c_programs, options
from .options import BUSY_LIMIT, SHUTDOWN_ROW, WORKLOADS, Workload

#: The server programs and the shutdown row, run by module name: they are
#: wherever the package is, a checkout or site-packages.
SERVERS = [sys.executable, "-m", "fastserver.bench.servers"]
SHUTDOWN = [sys.executable, "-m", "fastserver.bench.shutdown_latency"]
SERVER_CPU, CLIENT_CPU = "0", "1"  # the first two CPUs we may use: see pick_cpus()
IMPLS = ("stdlib", "fastserver")
#: refserver.c: the workload served by a C epoll server, no Python --
#: the floor both modules are compared with ("÷ C" column).
REFERENCE = "c-reference"
REFERENCE_SERVERS = ("tcp-base", "tcp-stream", "udp-base", "udp-dgram", "tcp-persistent",
                     "green-persistent")
#: refserver.c's name of a servers.py workload, where they differ: the green
#: rows serve tcp-persistent's protocol.
REFERENCE_WORKLOAD = {"green-persistent": "tcp-persistent"}
#: uvloop's Protocol API on the persistent rows ("÷ uv" column): the event
#: loop with callbacks, which green handlers are measured against.  A row,
#: not a dependency: skipped, with a message, where uvloop is not installed.
UVLOOP = "uvloop"
UVLOOP_SERVERS = ("tcp-persistent", "green-persistent")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Rows measured on one server core and on two: their ratio is the scaling.
SCALING_PAIRS = [("threaded-cpu", "threaded-cpu-2cores"), ("pool-cpu", "pool-cpu-2cores")]


#: One run's figures, one workload's summary, the whole report (the JSON's
#: structure: plain dicts, as json.dump() writes them).
RunResult = dict[str, Any]
Summary = dict[str, Any]
Report = dict[str, Any]
#: The progress callback: (done, total, label of the step starting, or None).
ProgressCallback = Callable[[int, int, Optional[str]], None]


class BenchError(Exception):
    """The bench cannot go on: printed as one error line (plus what a
    failed program printed) and exit status 1."""


# ---- the C programs ---------------------------------------------------------

@functools.cache
def loadgen() -> str:
    """The load generator's binary, built on the first call (c_programs.py)."""
    return built(c_programs.LOADGEN)


@functools.cache
def refserver() -> str:
    """The C reference server's binary, built on the first call."""
    return built(c_programs.REFSERVER)


def built(program: c_programs.CProgram) -> str:
    try:
        return c_programs.build(program)
    except c_programs.BuildError as exc:
        raise BenchError(str(exc)) from None


# ---- CPU accounting -------------------------------------------------------

def read_proc(path: str) -> str:
    """The text of a /proc file, read with os.read(), no file object.

    On the free-threaded 3.13.5 closing a buffered file takes the file's
    lock a second time (close, then flush), and that take spins with
    sched_yield() before it blocks: some 80 yields per text file closed
    (strace).  Where the CPU is free a yield returns at once; where the
    server keeps this process's CPU busy (the -2cores rows) each one hands
    the CPU over for a time slice, and sampling the window's edge took
    0.1-0.7 s instead of microseconds, so the window no longer matched the
    load generator's.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    finally:
        os.close(fd)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, live and exited)."""
    fields = read_proc(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """{thread id: utime + stime} of a process's live threads."""
    times: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return times
    for tid in tids:
        try:
            fields = read_proc(f"/proc/{pid}/task/{tid}/stat").rsplit(")", 1)[1].split()
        except OSError:  # the thread exited meanwhile
            continue
        times[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return times


def cpus_busy_seconds() -> float:
    """Non-idle time of the server's and the client's CPUs (/proc/stat), in s."""
    wanted = {"cpu" + SERVER_CPU, "cpu" + CLIENT_CPU}
    busy = 0.0
    for line in read_proc("/proc/stat").splitlines():
        name, *fields = line.split()
        if name in wanted:
            ticks = [int(t) for t in fields[:8]]
            busy += (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return busy


class Window:
    """Server CPU and both cores' busy time at the edges of a measured window."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None
        self.threads_start: dict[int, float] = {}
        self.threads_end: dict[int, float] = {}

    def sample(self) -> tuple[float, float]:
        return self.server.cpu(), cpus_busy_seconds()

    def open(self) -> None:
        self.start = self.sample()
        self.threads_start = thread_cpu_seconds(self.server.proc.pid)

    def close(self) -> None:
        self.threads_end = thread_cpu_seconds(self.server.proc.pid)
        self.end = self.sample()

    def result(self, client_cpu_s: float | None) -> RunResult:
        """server_cpu_s, and other_cpu_s: what else ran on the two cores."""
        if self.start is None or self.end is None:
            raise BenchError("the measured window never opened or closed")
        server = self.end[0] - self.start[0]
        busy = self.end[1] - self.start[1]
        # Which threads were busy: the CPU seconds of each server thread that
        # lived through the window, busiest first (the JSON's, for a profile
        # of where a server's time goes: its loop thread, or its handlers).
        threads = sorted((self.threads_end[tid] - self.threads_start[tid]
                          for tid in self.threads_end if tid in self.threads_start),
                         reverse=True)
        return {"server_cpu_s": server,
                "server_thread_cpu_s": threads,
                "other_cpu_s": max(0.0, busy - server - (client_cpu_s or 0))}


def wait_for_quiet(max_wait: float, threshold: float = 0.15, step: float = 0.5) -> float:
    """Wait up to max_wait s until both cores together are < threshold busy.

    The machine may be shared: a run started while other processes are busy
    measures them too.  Returns how busy the cores were when it gave up or
    went ahead, in cores.
    """
    deadline = time.monotonic() + max_wait
    while True:
        before = cpus_busy_seconds()
        time.sleep(step)
        busy = (cpus_busy_seconds() - before) / step
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def listen_overflows() -> int:
    """The kernel's TcpExt ListenOverflows counter (full accept queues)."""
    try:
        lines = [line.split() for line in read_proc("/proc/net/netstat").splitlines()
                 if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1]))["ListenOverflows"])
    except (OSError, KeyError, IndexError, ValueError):
        return 0


# ---- the server process ---------------------------------------------------

def server_cpu_list(count: int) -> str:
    """taskset's CPU list for a server allowed ``count`` (1 or 2) CPUs."""
    return SERVER_CPU if count == 1 else f"{SERVER_CPU},{CLIENT_CPU}"


class Server:
    """A servers.py (or refserver) subprocess pinned to SERVER_CPU (or to
    both CPUs, ``cpus=2``); stopped by its pid."""

    def __init__(self, impl: str, workload: str, tmpdir: str, backlog: int, cpus: int = 1,
                 work_iterations: int = 0) -> None:
        self.ready_file = os.path.join(tmpdir, f"{impl}-{workload}.port")
        self.log_path = os.path.join(tmpdir, f"{impl}-{workload}.log")
        # Open for the server's whole life (its stdout); close() closes it.
        self.log = open(self.log_path, "w")  # noqa: SIM115
        program = [refserver()] if impl == REFERENCE else [*SERVERS, "--impl", impl]
        if work_iterations:
            program += ["--work-iterations", str(work_iterations)]
        if impl == REFERENCE:
            workload = REFERENCE_WORKLOAD.get(workload, workload)
        cmd = ["taskset", "-c", server_cpu_list(cpus), *program, "--workload", workload,
               "--port", "0", "--ready-file", self.ready_file, "--backlog", str(backlog)]
        # taskset execs the server: self.proc.pid is the server's own pid.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.port = self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        """What the server printed (stdout and stderr) so far."""
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait_ready(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as f:
                    return int(f.read())
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode} "
                                 f"before it was ready:\n{self.output()}")
            time.sleep(0.02)
        raise BenchError(f"server not ready after {timeout} s:\n{self.output()}")

    def cpu(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit; returns its exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        if os.path.exists(self.ready_file):
            os.unlink(self.ready_file)
        return self.proc.returncode


# ---- drivers ----------------------------------------------------------------

def run_loadgen(server: Server, spec: Workload, duration: float, warmup: float) -> RunResult:
    """Run loadgen; sample the server's CPU at its measure-start/-end lines."""
    deadline = warmup + duration + 15
    cmd = ["taskset", "-c", CLIENT_CPU, loadgen(), "--mode", spec.mode,
           "--addr", f"127.0.0.1:{server.port}", "--size", str(spec.size),
           "--concurrency", str(spec.concurrency), "--duration", str(duration),
           "--warmup", str(warmup), "--deadline", str(deadline)]
    if spec.think_ms:
        cmd += ["--think-ms", str(spec.think_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stderr is not None  # both PIPEs
    window = Window(server)
    try:
        messages = follow_loadgen(proc.stderr, window, server, deadline + 5)
        out = proc.stdout.read()
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if not out.strip():
        raise BenchError(f"loadgen printed no result (exit {proc.returncode}):\n"
                         + "".join(messages))
    result: RunResult = json.loads(out)
    if result["timed_out"] or window.end is None:
        raise BenchError("loadgen never finished measuring:\n" + "".join(messages))
    client_cpu_s = result["client_cpu_pct"] * result["seconds"] / 100
    result.update(window.result(client_cpu_s))
    result["messages"] = messages
    return result


def follow_loadgen(stderr: IO[str], window: Window, server: Server,
                   timeout: float) -> list[str]:
    """Read loadgen's stderr; sample CPU times at the window's edges.
    Returns the other lines it printed."""
    messages: list[str] = []
    end = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stderr, selectors.EVENT_READ)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise BenchError("loadgen overran its deadline")
            if server.proc.poll() is not None:
                raise BenchError(f"the server exited with {server.proc.returncode} "
                                 "during the run")
            if not sel.select(min(left, 0.5)):
                continue
            line = stderr.readline()
            if not line:
                return messages
            if line.strip() == "measure-start":
                window.open()
            elif line.strip() == "measure-end":
                window.close()
            else:
                messages.append(line)


class BusyConnection:
    """The convoy row's CPU-bound connection: a second loadgen, tcp-rr on one
    connection, sending lines of ``spec.busy_size`` bytes (servers.py's
    convoy handler runs its loop for each) back to back.  It starts before
    the measured loadgen and runs ``margin`` s longer than its warm-up and
    window, so the window never sees the server without it.  It is as cheap
    a client as the measured one: it sleeps in epoll_wait() while the
    server works."""

    def __init__(self, server: Server, spec: Workload, duration: float, warmup: float,
                 margin: float = 1.0) -> None:
        seconds = warmup + duration + margin
        cmd = ["taskset", "-c", CLIENT_CPU, loadgen(), "--mode", "tcp-rr",
               "--addr", f"127.0.0.1:{server.port}", "--size", str(spec.busy_size),
               "--concurrency", "1", "--duration", str(seconds), "--warmup", "0",
               "--deadline", str(seconds + 15)]
        self.out = tempfile.TemporaryFile("w+")  # noqa: SIM115 -- closed by result()
        self.err = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, text=True)
        self.timeout = seconds + 20

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self) -> RunResult:
        """busy_ops_per_sec, busy_p50_us, busy_errors of the whole busy run."""
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError("the busy connection's loadgen overran its deadline") from None
        self.out.seek(0)
        self.err.seek(0)
        out, err = self.out.read(), self.err.read()
        self.stop()
        if not out.strip():
            raise BenchError(f"the busy connection's loadgen printed no result "
                             f"(exit {self.proc.returncode}):\n{err}")
        busy = json.loads(out)
        return {"busy_ops_per_sec": busy["ops_per_sec"], "busy_p50_us": busy["p50_us"],
                "busy_errors": busy["errors"]}

    def stop(self) -> None:
        """Kill it if it still runs; close its output files (idempotent)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()
        self.err.close()


WRK_UNITS = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}


def parse_wrk(text: str) -> RunResult:
    """ops, seconds, ops/s, latency percentiles and errors from wrk --latency."""
    def number(pattern: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        match = re.search(pattern, text)
        if not match:
            if default is None:
                raise BenchError(f"cannot parse wrk output:\n{text}")
            return default
        return match.groups()

    ops, duration, unit = number(r"(\d+) requests in ([\d.]+)(\w+),")
    seconds = float(duration) * WRK_UNITS.get(unit, 1e6) / 1e6
    result: RunResult = {"ops": int(ops), "seconds": seconds,
              "ops_per_sec": float(number(r"Requests/sec:\s+([\d.]+)")[0])}
    for pct, key in (("50", "p50_us"), ("90", "p90_us"), ("99", "p99_us")):
        value, unit = number(rf"\n\s+{pct}%\s+([\d.]+)(\w+)")
        result[key] = float(value) * WRK_UNITS[unit]
    socket_errors = number(r"Socket errors: connect (\d+), read (\d+), "
                           r"write (\d+), timeout (\d+)", ("0",) * 4)
    non2xx = number(r"Non-2xx or 3xx responses: (\d+)", ("0",))
    result["errors"] = sum(map(int, socket_errors)) + int(non2xx[0])
    return result


def wrk_command(server: Server, spec: Workload, seconds: int) -> list[str]:
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{spec.concurrency}",
           f"-d{seconds}s", "--timeout", "2s", "--latency"]
    if not spec.keepalive:
        cmd += ["-H", "Connection: close"]
    return cmd + [f"http://127.0.0.1:{server.port}/"]


def wrk(cmd: list[str], timeout: float,
        window: Window | None = None) -> tuple[int, str, str, float]:
    """Run wrk; returns (exit code, stdout, stderr, wrk's CPU seconds)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        if window:
            window.open()
        deadline = time.monotonic() + timeout
        pid = 0
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"wrk overran {timeout} s")
                time.sleep(0.05)
        finally:
            if not pid:
                os.kill(proc.pid, signal.SIGKILL)
                os.waitpid(proc.pid, 0)
        if window:
            window.close()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), usage.ru_utime + usage.ru_stime


def run_wrk(server: Server, spec: Workload, duration: float, warmup: float) -> RunResult:
    """Warm up with one wrk run, then measure with another."""
    seconds = max(1, round(duration))  # wrk takes whole seconds only
    if warmup > 0:
        wrk(wrk_command(server, spec, max(1, round(warmup))), warmup + 30)
    window = Window(server)
    code, out, err, client_cpu_s = wrk(wrk_command(server, spec, seconds),
                                       seconds + 30, window)
    if code != 0:
        raise BenchError(f"wrk failed ({code}):\n{err}")
    result = parse_wrk(out)
    result.update(window.result(client_cpu_s))
    # wrk's own CPU over its whole run (connecting included), per second measured
    result["client_cpu_pct"] = 100 * client_cpu_s / result["seconds"]
    result["wrk_output"] = out
    return result


# ---- one run, one workload --------------------------------------------------

def one_run(impl: str, name: str, args: argparse.Namespace, tmpdir: str) -> RunResult:
    spec = WORKLOADS[name]
    duration, warmup = args.duration, args.warmup
    if args.quiet_wait:
        still_busy = wait_for_quiet(args.quiet_wait)
        if still_busy >= 0.15:
            print(f"  note: cores still {100 * still_busy:.0f}% busy after waiting "
                  f"{args.quiet_wait} s for quiet; running anyway", file=sys.stderr)
    overflows = listen_overflows()
    server = Server(impl, spec.server, tmpdir, args.backlog, spec.server_cpus,
                    args.work_iterations if spec.work else 0)
    busy: BusyConnection | None = None
    try:
        if spec.busy_size:
            busy = BusyConnection(server, spec, duration, warmup)
        driver = run_wrk if spec.driver == "wrk" else run_loadgen
        result = driver(server, spec, duration, warmup)
        if server.proc.poll() is not None:
            raise BenchError(f"the server exited with {server.proc.returncode} "
                             "during the run")
        if busy is not None:
            if not busy.running():
                raise BenchError("the busy connection ended before the measured window did")
            result.update(busy.result())
            if result["busy_errors"]:
                result["errors"] += result["busy_errors"]
    except BenchError as exc:
        raise BenchError(f"{name}/{impl}: {exc}\nserver output:\n"
                         f"{server.output()}") from None
    finally:
        if busy is not None:
            busy.stop()
        code = server.stop()
    if code != 0:
        raise BenchError(f"server exited with {code} after SIGTERM:\n{server.output()}")
    result.update(impl=impl, workload=name,
                  listen_overflows=listen_overflows() - overflows)
    ops = result["ops"]
    if not ops:
        raise BenchError(f"{name}/{impl}: no operation completed: "
                         f"{''.join(result.get('messages', []))}\n{server.output()}")
    # With a busy connection, most of the server's CPU is the busy
    # connection's: per measured (trivial) request it means nothing.
    result["server_us_per_op"] = (None if spec.busy_size
                                  else result["server_cpu_s"] * 1e6 / ops)
    result["server_cpu_pct"] = 100 * result["server_cpu_s"] / result["seconds"]
    result["server_thread_cpu_pct"] = [round(100 * t / result["seconds"], 1)
                                       for t in result.pop("server_thread_cpu_s")]
    result["other_cpu_pct"] = 100 * result["other_cpu_s"] / result["seconds"]
    return result


CLIENT_BOUND = 95  # gen% above which the load generator, not the server, sets the pace


def measured_run(impl: str, name: str, args: argparse.Namespace,
                 tmpdir: str) -> tuple[RunResult, list[RunResult]]:
    """One run; redone up to --retries times while other processes disturb it.

    Returns the kept run and the discarded ones (marked so in the JSON).
    """
    discarded: list[RunResult] = []
    while True:
        result = one_run(impl, name, args, tmpdir)
        if result["other_cpu_pct"] <= BUSY_LIMIT or len(discarded) >= args.retries:
            return result, discarded
        print(f"  note: {name}/{impl}: other processes used "
              f"{result['other_cpu_pct']:.0f}% of a core: run again", file=sys.stderr)
        result["discarded"] = True
        discarded.append(result)


def run_workload(name: str, args: argparse.Namespace, tmpdir: str, all_runs: list[RunResult],
                 progress: Progress) -> list[RunResult]:
    """Alternate stdlib and fastserver runs; return kept and discarded runs.

    Each run is also appended to all_runs as soon as it is done.
    """
    runs: list[RunResult] = []
    for i in range(args.runs):
        for impl in impls_of(name, args):
            progress.step(f"{name}: {impl}, run {i + 1} of {args.runs}")
            result, discarded = measured_run(impl, name, args, tmpdir)
            for r in discarded + [result]:
                r["run"] = i
            warn_about(result)
            runs += discarded + [result]
            all_runs += discarded + [result]
    return runs


def impls_of(name: str, args: argparse.Namespace) -> tuple[str, ...]:
    """The implementations a workload runs on: both modules, and the C
    reference and uvloop where they serve it (not with --no-reference)."""
    impls: tuple[str, ...] = IMPLS
    if args.reference and WORKLOADS[name].server in REFERENCE_SERVERS:
        impls += (REFERENCE,)
    if args.reference and WORKLOADS[name].server in UVLOOP_SERVERS and uvloop_installed():
        impls += (UVLOOP,)
    return impls


@functools.cache
def uvloop_installed() -> bool:
    """Whether uvloop can run here (said once when it cannot)."""
    if importlib.util.find_spec("uvloop") is not None:
        return True
    print("note: uvloop is not installed: the uvloop rows are skipped "
          "(pip install uvloop to add them)", file=sys.stderr)
    return False


def warn_about(result: RunResult) -> None:
    label = f"{result['workload']}/{result['impl']}"
    if result.get("errors"):
        print(f"  warning: {label}: {result['errors']} errors", file=sys.stderr)
    if result.get("lost"):
        print(f"  warning: {label}: {result['lost']} datagrams resent after a "
              "timeout", file=sys.stderr)
    if result.get("listen_overflows"):
        print(f"  warning: {label}: the kernel counted {result['listen_overflows']} "
              "accept-queue overflows during the run (SYNs dropped, 1 s retries; "
              "the counter is system-wide, so they may be another process's)",
              file=sys.stderr)
    if result["other_cpu_pct"] > BUSY_LIMIT:
        print(f"  warning: {label}: other processes used {result['other_cpu_pct']:.0f}% "
              "of a core during the run: figures disturbed", file=sys.stderr)


# ---- summary ----------------------------------------------------------------

def median_of(runs: list[RunResult], key: str) -> float | None:
    values: list[float] = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def spread_of(runs: list[RunResult], key: str) -> float | None:
    """(max - min) / median of the runs, in percent."""
    values: list[float] = [r[key] for r in runs if r.get(key) is not None]
    if len(values) < 2 or not statistics.median(values):
        return None
    return 100 * (max(values) - min(values)) / statistics.median(values)


def summarize(name: str, runs: list[RunResult]) -> Summary:
    rows: dict[str, dict[str, Any]] = {}
    for impl in (*IMPLS, REFERENCE, UVLOOP):
        mine = [r for r in runs if r["impl"] == impl and not r.get("discarded")]
        if impl not in IMPLS and not mine:
            continue
        rows[impl] = {key: median_of(mine, key) for key in (
            "ops_per_sec", "p50_us", "p99_us", "server_us_per_op",
            "server_cpu_pct", "client_cpu_pct", "other_cpu_pct",
            "busy_ops_per_sec", "busy_p50_us")}
        rows[impl]["spread_ops_pct"] = spread_of(mine, "ops_per_sec")
        rows[impl]["spread_us_per_op_pct"] = spread_of(mine, "server_us_per_op")
        rows[impl]["errors"] = sum(r.get("errors") or 0 for r in mine)
        rows[impl]["runs"] = len(mine)
    std, fast = rows["stdlib"], rows["fastserver"]

    def ratio(key: str, mine: dict[str, Any], theirs: dict[str, Any]) -> float | None:
        return (mine[key] / theirs[key]) if mine[key] and theirs[key] else None

    summary: Summary = {"workload": name, "stdlib": std, "fastserver": fast,
               "ratio_us_per_op": ratio("server_us_per_op", fast, std),
               "ratio_ops_per_sec": ratio("ops_per_sec", fast, std)}
    if WORKLOADS[name].busy_size:  # the convoy row: latency is the figure
        summary["ratio_p50"] = ratio("p50_us", fast, std)
        summary["ratio_p99"] = ratio("p99_us", fast, std)
    if REFERENCE in rows:
        ref = summary[REFERENCE] = rows[REFERENCE]
        for impl in IMPLS:  # how far each is from the C floor, in CPU per op
            rows[impl]["us_per_op_over_reference"] = ratio("server_us_per_op", rows[impl], ref)
    if UVLOOP in rows:
        uv = summary[UVLOOP] = rows[UVLOOP]
        for impl in IMPLS:  # how far each is from an event loop's callbacks
            rows[impl]["us_per_op_over_uvloop"] = ratio("server_us_per_op", rows[impl], uv)
    return summary


def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def fmt_spread(spread: float | None, width: int) -> str:
    """± half the range, in percent."""
    return f"{'-' if spread is None else f'±{spread / 2:.0f}%':>{width}}"


HEADER = (f"{'workload':<22}{'impl':<12}{'ops/s':>10}{'p50 us':>9}{'p99 us':>9}"
          f"{'srv us/op':>11}{'spread':>8}{'srv%':>6}{'gen%':>6}{'bg%':>5}{'err':>5}"
          f"{'us/op ratio':>13}{'ops/s ratio':>13}{'÷ C':>7}{'÷ uv':>7}")


def print_summary(summary: Summary) -> None:
    impls = [impl for impl in (*IMPLS, REFERENCE, UVLOOP) if impl in summary]
    for impl in impls:
        row = summary[impl]
        cells = [f"{summary['workload']:<22}{impl:<12}",
                 fmt(row["ops_per_sec"], ",.0f", 10),
                 fmt(row["p50_us"], ".0f", 9),
                 fmt(row["p99_us"], ".0f", 9),
                 fmt(row["server_us_per_op"], ".1f", 11),
                 fmt_spread(row["spread_us_per_op_pct"], 8),
                 fmt(row["server_cpu_pct"], ".0f", 6),
                 fmt(row["client_cpu_pct"], ".0f", 6),
                 fmt(row["other_cpu_pct"], ".0f", 5),
                 fmt(row["errors"], "d", 5)]
        if impl == "fastserver":
            cells += [fmt(summary["ratio_us_per_op"], ".2f", 13),
                      fmt(summary["ratio_ops_per_sec"], ".2f", 13)]
        elif impl == "stdlib":
            cells += [" " * 26]
        if "us_per_op_over_reference" in row or "us_per_op_over_uvloop" in row:
            cells.append(fmt(row.get("us_per_op_over_reference"), ".2f", 7))
        if "us_per_op_over_uvloop" in row:
            cells.append(fmt(row["us_per_op_over_uvloop"], ".2f", 7))
        print("".join(cells).rstrip(), flush=True)
    if "ratio_p50" in summary:
        busy = "; ".join(f"{impl} {fmt(summary[impl]['busy_ops_per_sec'], ',.0f', 0)} req/s"
                         f" (p50 {fmt(summary[impl]['busy_p50_us'], '.0f', 0)} us)"
                         for impl in IMPLS)
        print(f"{'':<22}^ one connection's round trips while another is CPU-bound "
              f"({busy}); fastserver/stdlib: p50 {fmt(summary['ratio_p50'], '.2f', 0)}, "
              f"p99 {fmt(summary['ratio_p99'], '.2f', 0)}", flush=True)
    if any((summary[impl]["client_cpu_pct"] or 0) > CLIENT_BOUND for impl in impls):
        print(f"{'':<22}^ client-bound: the load generator's core is saturated, so "
              "ops/s is its limit; compare srv us/op", flush=True)


def scaling(summaries: list[Summary]) -> list[dict[str, Any]]:
    """For each SCALING_PAIRS pair measured: ops/s on two server cores over
    ops/s on one, per implementation."""
    by_name = {s["workload"]: s for s in summaries}
    rows = []
    for one, two in SCALING_PAIRS:
        if one in by_name and two in by_name:
            row: dict[str, Any] = {"workloads": [one, two]}
            for impl in IMPLS:
                a, b = by_name[one][impl]["ops_per_sec"], by_name[two][impl]["ops_per_sec"]
                row[impl] = b / a if a and b else None
            rows.append(row)
    return rows


def print_scaling(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(f"{'scaling':<22}{row['workloads'][1]} / {row['workloads'][0]} ops/s: "
              + ", ".join(f"{impl} {fmt(row[impl], '.2f', 0)}x" for impl in IMPLS),
              flush=True)


# ---- the shutdown row -------------------------------------------------------

def run_shutdown(quick: bool, tmpdir: str) -> dict[str, Any]:
    out = os.path.join(tmpdir, "shutdown.json")
    # both cores, as the script is meant to run (run.py pins itself to one)
    cmd = ["taskset", "-c", f"{SERVER_CPU},{CLIENT_CPU}", *SHUTDOWN,
           "--json", out]
    if quick:
        cmd += ["--trials", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BenchError(f"shutdown_latency.py failed:\n{done.stderr}")
    with open(out) as f:
        result: dict[str, Any] = json.load(f)
    return result


def print_shutdown(result: dict[str, Any]) -> None:
    std, fast = result["stdlib"]["median_ms"], result["fastserver"]["median_ms"]
    print(f"{'shutdown':<22}{'stdlib':<12}median {std:8.3f} ms  "
          f"(p90 {result['stdlib']['p90_ms']:.3f} ms)")
    print(f"{'shutdown':<22}{'fastserver':<12}median {fast:8.3f} ms  "
          f"(p90 {result['fastserver']['p90_ms']:.3f} ms)"
          f"  ratio {fast / std:.4f} ({result['trials']} trials, "
          f"poll_interval {result['poll_interval']} s)", flush=True)


# ---- progress, for `python -m fastserver bench`'s bar ---------------------

class Progress:
    """Counts the planned measurements (a run per implementation per --runs,
    one for the shutdown row) and reports each start to a callback,
    ``callback(done, total, label)``; ``label`` is None once all are done.
    A run redone because the machine was busy is not counted again."""

    def __init__(self, names: Iterable[str], runs: int, callback: ProgressCallback | None = None,
                 impls_of: Callable[[str], Sequence[str]] = lambda name: IMPLS) -> None:
        self.total = sum(1 if name == SHUTDOWN_ROW else len(impls_of(name)) * runs
                         for name in names)
        self.done = 0
        self.callback = callback

    def step(self, label: str) -> None:
        """A measurement starts (and the one before it, if any, is done)."""
        if self.callback:
            self.callback(self.done, self.total, label)
        self.done += 1

    def finish(self) -> None:
        if self.callback:
            self.callback(self.total, self.total, None)


# ---- main -------------------------------------------------------------------

def calibrate_work(args: argparse.Namespace, attempts: int = 3) -> tuple[int, list[int]]:
    """The burn() loop count for --cpu-work-us, measured once for the whole
    bench by servers.py --calibrate-us on the server's CPU, so that every
    server of the bench, stdlib and fastserver, does the same work per line;
    and the count each calibration found (none with --cpu-work-iterations).

    Each of ``attempts`` calibrations waits for quiet first and takes about
    a second; the largest count wins: a disturbed calibration only ever
    finds the loop slower (fewer iterations per microsecond), and one that
    ran in a slow second of a drifting machine once gave 0.6 of the count.
    """
    if args.cpu_work_iterations:
        return args.cpu_work_iterations, []
    counts = []
    for _ in range(attempts):
        if args.quiet_wait:
            wait_for_quiet(args.quiet_wait)
        done = subprocess.run(["taskset", "-c", SERVER_CPU, *SERVERS,
                               "--calibrate-us", str(args.cpu_work_us)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"calibrating the CPU-bound work failed:\n{done.stderr}")
        counts.append(int(done.stdout.split()[-1]))
    return max(counts), counts


def pick_cpus() -> None:
    """Server and client CPUs: the first two this process may run on."""
    global SERVER_CPU, CLIENT_CPU
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        print(f"note: only CPU {allowed[0]} is available: server and load generator "
              "share it, so the figures mean little (a smoke test still works)")
        allowed *= 2
    SERVER_CPU, CLIENT_CPU = str(allowed[0]), str(allowed[1])


def check_platform() -> None:
    if not (hasattr(os, "sched_setaffinity") and os.path.exists("/proc/stat")):
        raise BenchError("the bench runs on Linux only: it pins its processes to CPUs "
                         "and reads their CPU time from /proc")


def check_environment(names: list[str], reference: bool) -> list[str]:
    """The workloads that can run here (http needs wrk, the green rows
    greenlet and the compiled core), once taskset is found and the C
    programs they need are built."""
    if shutil.which("taskset") is None:
        raise BenchError("taskset not found (util-linux)")
    green_rows = [n for n in names if n in WORKLOADS and WORKLOADS[n].server.startswith("green")]
    if green_rows:
        from fastserver.green import green_unavailable

        reason = green_unavailable()
        if reason is not None:
            print(f"skipping {', '.join(green_rows)}: {reason}", flush=True)
            names = [n for n in names if n not in green_rows]
    if any(WORKLOADS[n].driver == "wrk" for n in names if n in WORKLOADS) \
            and shutil.which("wrk") is None:
        print("wrk not installed: skipping http (apt-get install wrk)", flush=True)
        names = [n for n in names if n not in WORKLOADS or WORKLOADS[n].driver != "wrk"]
    if any(n in WORKLOADS and WORKLOADS[n].driver == "loadgen" for n in names):
        loadgen()
        if reference:
            refserver()
    return names


def source_state() -> dict[str, Any]:
    """The commit of the checkout fastserver was imported from, and whether
    its src/ differs from it; None for both outside a checkout (an installed
    wheel) or without git."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(fastserver.__file__)))

    def git(*cmd: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", source, *cmd], capture_output=True, text=True)
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    modified = None if commit is None else bool(git("status", "--porcelain", "--", "."))
    return {"commit": commit, "src_modified": modified,
            "fastserver_file": fastserver.__file__}


def gil_enabled() -> bool:
    """False on a free-threaded build running without the GIL (3.13t)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    return {**source_state(),
            "python": sys.version.split()[0], "core": fastserver.CORE_IMPLEMENTATION,
            "gil_enabled": gil_enabled(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "runs": args.runs, "duration": args.duration, "warmup": args.warmup,
            "backlog": args.backlog, "loadavg_at_start": os.getloadavg(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastserver.bench.run`` and ``python bench/run.py``."""
    return run_suite(options.parse_args(argv, description=__doc__.splitlines()[0]))[0]


def run_suite(args: argparse.Namespace,
              progress: ProgressCallback | None = None) -> tuple[int, Report]:
    """The whole bench, for options.py's completed ``args``: returns (exit
    status, report).  The report is what --json writes, whatever was
    measured before a failure included; a failure is reported on stderr as
    ``PROG: error: ...``, as argparse reports a usage error.  ``progress``
    is a Progress callback."""
    report: Report = {"meta": {}, "summary": [], "runs": []}
    args.work_iterations = 0  # the CPU-bound rows' loop count, if they run
    # SIGTERM unwinds like Ctrl-C, so the finally clauses stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        check_platform()
        pick_cpus()
        # Keep this process, which wakes at the window's edges, off the server's core.
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
        names = check_environment(args.names, args.reference)
        calibrations: list[int] = []
        if any(WORKLOADS[n].work for n in names if n in WORKLOADS):
            args.work_iterations, calibrations = calibrate_work(args)
        meta = report["meta"] = metadata(args)
        free_threaded = "" if meta["gil_enabled"] else " (free-threaded, GIL off)"
        print(f"fastserver bench: core={meta['core']}, python {meta['python']}{free_threaded}, "
              f"{args.runs} run(s) x {args.duration} s (+{args.warmup} s warm-up) "
              f"per implementation; server on CPU {SERVER_CPU}, load on CPU {CLIENT_CPU}; "
              f"TCP backlog {args.backlog}; load average {os.getloadavg()[0]:.2f}")
        print("medians of the runs; spread = ± half the range of srv us/op; "
              "ratios = fastserver/stdlib (us/op: lower is better); "
              f"÷ C = srv us/op over the {REFERENCE} row's (refserver.c); "
              f"÷ uv = over the {UVLOOP} row's (its Protocol API, where installed)")
        if args.work_iterations:
            meta["cpu_work_iterations"] = args.work_iterations
            meta["cpu_work_us"] = None if args.cpu_work_iterations else args.cpu_work_us
            meta["cpu_work_calibrations"] = calibrations
            how = ("as given" if args.cpu_work_iterations
                   else f"calibrated to ~{args.cpu_work_us:.0f} us of CPU")
            print(f"CPU-bound rows: burn({args.work_iterations}) per line ({how}); "
                  "-2cores rows: the server may use both CPUs, the load generator "
                  f"stays on CPU {CLIENT_CPU}")
        print(HEADER, flush=True)
        steps = Progress(names, args.runs, progress, lambda name: impls_of(name, args))
        with tempfile.TemporaryDirectory(prefix="fastserver-bench-") as tmpdir:
            for name in names:
                if name == SHUTDOWN_ROW:
                    steps.step("shutdown latency")
                    report["shutdown"] = run_shutdown(args.quick, tmpdir)
                    print_shutdown(report["shutdown"])
                    continue
                runs = run_workload(name, args, tmpdir, report["runs"], steps)
                summary = summarize(name, runs)
                report["summary"].append(summary)
                print_summary(summary)
        report["scaling"] = scaling(report["summary"])
        print_scaling(report["scaling"])
        steps.finish()
    except BenchError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        report["error"] = str(exc)
        return 1, report
    finally:
        if args.json:  # what was measured, even when a run failed
            with open(args.json, "w") as out:
                json.dump(report, out, indent=2)
    return 0, report


if __name__ == "__main__":
    sys.exit(main())
