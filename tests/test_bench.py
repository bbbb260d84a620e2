"""The bench's free-threading rows: the CPU-bound and convoy servers
(fastserver/bench/servers.py), run.py's workloads, summaries and /proc
reading, and loadgen's --think-ms.

Correctness only, and quick: the servers run with a tiny loop count, the
load generator for a few dozen requests.  What the rows measure is for
``python -m fastserver bench --workloads freethreading`` (README, Benchmarks),
never asserted here.
"""
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
from pathlib import Path

import pytest

import fastserver
from fastserver import cli
from fastserver.bench import c_programs, options, run, servers

import util
import variants

#: The checkout's bench/ (absent when the tests were copied elsewhere to
#: test an installed wheel): the developers' entry to the same suite.
BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"

MODULES = {"stdlib": socketserver, "fastserver": fastserver}


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None or sys.platform != "linux":
        pytest.skip("loadgen.c needs Linux (epoll) and a C compiler")
    binary = str(tmp_path_factory.mktemp("loadgen") / "loadgen")
    build = subprocess.run([compiler, "-O2", "-std=c99", "-Wall", "-o", binary,
                            str(c_programs.LOADGEN.source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return binary


def make_server(workload, impl, iterations=50):
    servers.work_iterations = iterations
    try:
        server_class, handler = servers.WORKLOADS[workload](MODULES[impl])
    finally:
        servers.work_iterations = 0
    return server_class(("127.0.0.1", 0), handler)


# ---- servers.py -----------------------------------------------------------------

@pytest.mark.parametrize("impl", sorted(MODULES))
@pytest.mark.parametrize("workload", ["threaded-cpu", "pool-cpu", "convoy"])
def test_cpu_bound_servers_echo_every_line(workload, impl):
    server = make_server(workload, impl)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as sock:
            # For convoy, a short line (echoed at once) and a long one (the work).
            for line in (b"x" * 63 + b"\n", b"y" * (servers.WORK_LINE + 10) + b"\n"):
                sock.sendall(line)
                assert util.recv_exactly(sock, len(line)) == line


def test_pool_cpu_is_a_pool_on_fastserver_only():
    fast = make_server("pool-cpu", "fastserver")
    std = make_server("pool-cpu", "stdlib")
    try:
        assert isinstance(fast, fastserver.ThreadPoolMixIn)
        assert fast.max_workers >= 4  # a worker for each of the bench's connections
        assert isinstance(std, socketserver.ThreadingTCPServer)
    finally:
        fast.server_close()
        std.server_close()


@pytest.mark.parametrize("workload", ["threaded-cpu", "pool-cpu", "convoy"])
def test_cpu_bound_servers_need_a_loop_count(workload):
    servers.work_iterations = 0
    with pytest.raises(SystemExit, match="--work-iterations"):
        servers.WORKLOADS[workload](fastserver)


def test_burn_is_deterministic_and_calibrate_counts():
    assert servers.burn(10) == sum(i * i for i in range(10))
    iterations = servers.calibrate(50, trials=3, spacing=0)
    assert isinstance(iterations, int) and iterations >= 1


def test_calibrate_from_the_command_line():
    done = subprocess.run([*run.SERVERS, "--calibrate-us", "50"],
                          capture_output=True, text=True, timeout=util.TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1


# ---- options.py -------------------------------------------------------------------

def test_default_workloads_are_unchanged():
    args = options.parse_args([])
    assert not set(args.names) & set(options.OPTIONAL_WORKLOADS)
    assert {"tcp-base", "udp-base", "shutdown"} <= set(args.names)


def test_free_threading_aliases():
    assert options.parse_args(["--workloads", "cpu"]).names == [
        "threaded-cpu", "threaded-cpu-2cores", "pool-cpu", "pool-cpu-2cores"]
    names = options.parse_args(["--workloads", "freethreading"]).names
    assert set(names) == set(options.OPTIONAL_WORKLOADS)
    for name in names:
        assert options.WORKLOADS[name].work
    assert options.WORKLOADS["convoy"].busy_size >= 128  # servers.WORK_LINE: the busy lines work
    assert options.WORKLOADS["convoy"].size < 128          # the probe's do not


def test_quick_sets_the_defaults_it_implies():
    args = options.parse_args(["--quick"])
    assert (args.runs, args.duration, args.warmup, args.quiet_wait, args.retries) == (
        1, 1, 0.5, 0, 0)
    args = options.parse_args(["--runs", "5", "--retries", "1"])
    assert (args.runs, args.quiet_wait, args.retries) == (5, 20, 1)


def test_options_report_errors_under_their_parser_s_name(capsys):
    with pytest.raises(SystemExit) as exited:
        options.parse_args(["--workloads", "tcp-base,nosuch"], prog="some-bench")
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("some-bench: error: argument --workloads: "
                            "unknown workload 'nosuch'; known: tcp-base, ")
    assert options.parse_args([], prog="some-bench").prog == "some-bench"


# ---- run.py -----------------------------------------------------------------------


def test_server_cpu_list():
    assert run.server_cpu_list(1) == run.SERVER_CPU
    assert run.server_cpu_list(2) == f"{run.SERVER_CPU},{run.CLIENT_CPU}"


def row(ops, p50=100.0, p99=200.0, us_per_op=None):
    return {"ops_per_sec": ops, "p50_us": p50, "p99_us": p99, "server_us_per_op": us_per_op,
            "server_cpu_pct": 100.0, "client_cpu_pct": 2.0, "other_cpu_pct": 0.0,
            "errors": 0}


def fake_runs(name, stdlib, fastserver_row, busy=False):
    runs = []
    for impl, values in (("stdlib", stdlib), ("fastserver", fastserver_row)):
        run_row = dict(values, impl=impl, workload=name)
        if busy:
            run_row.update(busy_ops_per_sec=50.0, busy_p50_us=20000.0)
        runs.append(run_row)
    return runs


def test_scaling_of_one_and_two_cores():
    summaries = [run.summarize("threaded-cpu", fake_runs("threaded-cpu", row(800), row(900))),
                 run.summarize("threaded-cpu-2cores",
                               fake_runs("threaded-cpu-2cores", row(1600), row(1710)))]
    [scaling] = run.scaling(summaries)
    assert scaling["workloads"] == ["threaded-cpu", "threaded-cpu-2cores"]
    assert scaling["stdlib"] == pytest.approx(2.0)
    assert scaling["fastserver"] == pytest.approx(1.9)
    assert run.scaling(summaries[:1]) == []


def test_convoy_summary_gives_latency_ratios(capsys):
    summary = run.summarize("convoy", fake_runs("convoy", row(200, p50=4000, p99=9000),
                                                row(900, p50=40, p99=90), busy=True))
    assert summary["ratio_p50"] == pytest.approx(0.01)
    assert summary["ratio_p99"] == pytest.approx(0.01)
    assert summary["fastserver"]["busy_ops_per_sec"] == 50.0
    run.print_summary(summary)
    out = capsys.readouterr().out
    assert "one connection's round trips while another is CPU-bound" in out
    assert "p50 0.01, p99 0.01" in out


def test_read_proc_reads_it_all(tmp_path):
    text = "".join(f"line {i}\n" for i in range(20000))  # more than one os.read()
    path = tmp_path / "big"
    path.write_text(text)
    assert run.read_proc(str(path)) == text
    if os.path.exists("/proc/self/stat"):
        assert run.read_proc("/proc/self/stat").split()[0] == str(os.getpid())


def test_thread_cpu_seconds_lists_this_process():
    if not os.path.isdir(f"/proc/{os.getpid()}/task"):
        pytest.skip("no /proc")
    times = run.thread_cpu_seconds(os.getpid())
    assert os.getpid() in times and all(t >= 0 for t in times.values())
    assert run.thread_cpu_seconds(-1) == {}


# ---- c_programs.py: compiled on first use, into the cache --------------------------

needs_a_compiler = pytest.mark.skipif(not shutil.which(c_programs.compiler_command()[0]),
                                      reason="needs a C compiler")


@pytest.fixture
def hello(tmp_path, monkeypatch):
    """A C program of one line, built into a cache of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "hello.c"
    source.write_text("int main(void) { return 0; }\n")
    return c_programs.CProgram("hello", "the hello program", source)


def cached_files(tmp_path):
    cache = tmp_path / "cache" / "fastserver" / "bench"
    return sorted(path.name for path in cache.iterdir()) if cache.is_dir() else []


@needs_a_compiler
def test_a_program_is_built_once_into_the_cache(hello, tmp_path):
    binary = Path(c_programs.build(hello))
    assert binary.parent == tmp_path / "cache" / "fastserver" / "bench"
    assert binary.name.startswith("hello-")
    assert subprocess.run([binary], timeout=util.TIMEOUT).returncode == 0
    built_at = binary.stat().st_mtime_ns
    assert c_programs.build(hello) == str(binary)
    assert binary.stat().st_mtime_ns == built_at  # not compiled again
    assert cached_files(tmp_path) == [binary.name]  # no temporary file left behind


@needs_a_compiler
def test_a_changed_source_or_compiler_builds_anew(hello, monkeypatch):
    first = c_programs.build(hello)
    hello.source.write_text("int main(void) { return 3; }\n")
    second = c_programs.build(hello)
    assert second != first
    assert subprocess.run([second], timeout=util.TIMEOUT).returncode == 3
    compiler = c_programs.compiler_command()
    monkeypatch.setenv("CC", " ".join([*compiler, "-DANOTHER_COMPILER"]))
    assert c_programs.build(hello) not in (first, second)


def test_the_cache_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert c_programs.cache_dir() == tmp_path / "xdg" / "fastserver" / "bench"
    default = tmp_path / "home" / ".cache" / "fastserver" / "bench"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the specification says
    assert c_programs.cache_dir() == default
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert c_programs.cache_dir() == default


def test_no_compiler_says_what_is_needed(hello, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.raises(c_programs.BuildError) as failed:
        c_programs.build(hello)
    assert str(failed.value) == (
        "building the hello program needs a C compiler, and 'no-such-compiler' was not "
        "found: install gcc or clang, or set CC to a C compiler")


@pytest.mark.skipif(not shutil.which("false"), reason="no false(1)")
def test_a_compiler_that_fails_says_what_is_needed(hello, tmp_path, monkeypatch):
    false = shutil.which("false")
    monkeypatch.setenv("CC", false)
    with pytest.raises(c_programs.BuildError) as failed:
        c_programs.build(hello)
    assert str(failed.value) == ("building the hello program needs a working C compiler: "
                                 f"{false} failed on hello.c (exit status 1)")
    assert cached_files(tmp_path) == []


@needs_a_compiler
def test_compiler_errors_follow_the_line(hello):
    hello.source.write_text("this is not C\n")
    with pytest.raises(c_programs.BuildError) as failed:
        c_programs.build(hello)
    first, *said = str(failed.value).splitlines()
    assert first.endswith("failed on hello.c (exit status 1); it said:")
    assert "hello.c" in "\n".join(said)


# ---- loadgen.c --think-ms ---------------------------------------------------------

def test_loadgen_think_time_keeps_the_count(loadgen):
    server = cli.make_echo_server("127.0.0.1", 0)
    with util.background_server(server):
        done = subprocess.run(
            [loadgen, "--mode", "tcp-rr", "--addr", f"127.0.0.1:{server.server_address[1]}",
             "--concurrency", "2", "--ops", "20", "--warmup", "0", "--think-ms", "2"],
            capture_output=True, text=True, timeout=util.TIMEOUT * 3)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["ops"], result["errors"], result["timed_out"]) == (20, 0, False)


def test_loadgen_think_time_is_for_tcp_rr_only(loadgen):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        done = subprocess.run(
            [loadgen, "--mode", "udp-rr", "--addr", f"127.0.0.1:{sock.getsockname()[1]}",
             "--ops", "1", "--think-ms", "1"],
            capture_output=True, text=True, timeout=util.TIMEOUT)
    assert done.returncode != 0
    assert "--think-ms" in done.stderr


# ---- the rows end to end ------------------------------------------------------------

@pytest.mark.skipif(not (BENCH_DIR / "run.py").is_file(), reason="no bench/ next to the tests")
def test_the_checkout_s_run_py_is_the_same_suite():
    """bench/run.py takes the suite's options, and reports their errors
    under its own name."""
    done = subprocess.run([sys.executable, str(BENCH_DIR / "run.py"), "--workloads", "nosuch"],
                          capture_output=True, text=True, timeout=util.TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: run.py [-h] [--quick]")
    assert "run.py: error: argument --workloads: unknown workload 'nosuch'" in done.stderr


@pytest.mark.skipif(not (BENCH_DIR / "run.py").is_file(), reason="no bench/ next to the tests")
@pytest.mark.skipif(not (shutil.which("taskset") and shutil.which(os.environ.get("CC", "cc"))),
                    reason="the bench needs taskset and a C compiler")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity")
                    else True, reason="the bench needs two CPUs")
def test_free_threading_rows_end_to_end(tmp_path):
    """One short run of a 1-core row, its 2-core twin and convoy, on a tiny
    loop (~8 s), through the checkout's bench/run.py: the rows, the scaling
    line and the convoy line come out, and the JSON has the loop count and
    each server thread's CPU."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "run.py"), "--runs", "1", "--duration", "0.5",
         "--warmup", "0.2", "--quiet-wait", "0", "--retries", "0",
         "--workloads", "threaded-cpu,threaded-cpu-2cores,convoy",
         "--cpu-work-iterations", "100", "--json", str(report)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()
            if line.split()[:1] in (["threaded-cpu"], ["threaded-cpu-2cores"], ["convoy"])]
    assert rows == [[name, impl] for name in ("threaded-cpu", "threaded-cpu-2cores", "convoy")
                    for impl in ("stdlib", "fastserver")]
    assert "scaling               threaded-cpu-2cores / threaded-cpu ops/s: stdlib " \
        in done.stdout
    assert "while another is CPU-bound" in done.stdout
    data = json.loads(report.read_text())
    assert data["meta"]["cpu_work_iterations"] == 100
    for one in data["runs"]:
        assert one["server_thread_cpu_pct"]  # at least the main and loop threads
        assert ("busy_ops_per_sec" in one) == (one["workload"] == "convoy")


# ---- the green rows ----------------------------------------------------------------

@pytest.mark.parametrize("impl", sorted(MODULES))
def test_green_persistent_echoes_on_threads_and_green_handlers(impl):
    if impl == "fastserver":
        variants.require_green()
    server_class, handler = servers.WORKLOADS["green-persistent"](MODULES[impl])
    if impl == "fastserver":
        from fastserver import green

        assert issubclass(server_class, green.GreenMixIn)
    else:
        assert issubclass(server_class, socketserver.ThreadingMixIn)
    server = server_class(("127.0.0.1", 0), handler)
    with util.background_server(server):
        with util.tcp_connect(server.server_address) as sock:
            for line in (b"a\n", b"b" * 100 + b"\n"):
                sock.sendall(line)
                assert util.recv_exactly(sock, len(line)) == line


def test_green_rows_are_skipped_where_green_handlers_cannot_run(monkeypatch, capsys):
    from fastserver import green

    monkeypatch.setattr(green, "green_unavailable", lambda: "no greenlet here")
    names = run.check_environment(["green-persistent", "udp-base"], reference=False)
    assert names == ["udp-base"]
    assert "skipping green-persistent: no greenlet here" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_idle_memory_measures_both_servers(tmp_path):
    variants.require_green()
    out = tmp_path / "idle.json"
    done = subprocess.run([sys.executable, "-m", "fastserver.bench.idle_memory",
                           "--connections", "50", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["impl"] for row in rows] == ["stdlib", "fastserver"]
    assert rows[0]["threads"] >= 50 > rows[1]["threads"]
