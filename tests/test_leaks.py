"""Nothing lost, nothing leaked: the survival battery's leak check, fast version:
about 10,000 requests through each server flavour, over TCP, Unix stream
sockets and UDP, on the compiled core and on the twin.

The client is the bench's loadgen.c (built here with the system C compiler): a
Python client would share the server's GIL and measure itself.  After a
warm-up, the server's process is measured (fds, threads, child processes,
RSS, objects the garbage collector tracks), the requests run, and it is
measured again: every request must have been answered, nothing may be
left over, and RSS may not grow by 5 % or more (not checked under
tools/asan.sh, whose quarantine keeps freed memory on purpose).  bench/soak.py runs the
same check with 1,000,000 requests per flavour.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from fastserver.bench import c_programs

from hostile_util import FLAVOURS, FORK_WARNING_FILTER, BatteryServer, Reports
from util import TIMEOUT, short_tmpdir

pytestmark = pytest.mark.filterwarnings(FORK_WARNING_FILTER)

LOADGEN_SOURCE = str(c_programs.LOADGEN.source)

#: Requests per transport, after WARMUP: ~10,000 per flavour (forking,
#: one process per request, gets fewer).
REQUESTS = {"tcp": 3000, "unix": 2000, "udp": 5000}
FORKING_REQUESTS = {"tcp": 200, "unix": 150, "udp": 200}
WARMUP = 500
#: The line each request sends (and gets back): big enough that a request
#: that leaked its buffers would show in RSS.
LINE_SIZE = 1000
MODES = {"tcp": "tcp-conn", "unix": "tcp-conn", "udp": "udp-rr"}

RSS_GROWTH_LIMIT = 0.05
#: Objects the collector tracks may differ by a few between two snapshots
#: (a cached frame, a lazily made module attribute); a per-request leak of
#: even one object would show as thousands.
OBJECT_SLACK = 200


@pytest.fixture(scope="session")
def loadgen(tmp_path_factory):
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.skip("loadgen.c needs a C compiler")
    binary = str(tmp_path_factory.mktemp("loadgen") / "loadgen")
    build = subprocess.run([compiler, "-O2", "-std=c99", "-o", binary, LOADGEN_SOURCE],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return binary


def drive(loadgen, transport, address, requests, concurrency=8):
    """Run ``requests`` requests; loadgen's JSON report."""
    target = address if isinstance(address, str) else "%s:%d" % address
    run = subprocess.run(
        [loadgen, "--mode", MODES[transport], "--addr", target, "--ops", str(requests),
         "--warmup", "0", "--size", str(LINE_SIZE), "--concurrency", str(concurrency),
         "--timeout-ms", str(int(TIMEOUT * 1000))],
        capture_output=True, text=True, timeout=TIMEOUT * 12,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


@pytest.mark.parametrize("transport", ["tcp", "unix", "udp"])
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_many_requests_leave_nothing_behind(fs_native, variant, flavour, transport, loadgen):
    module = fs_native
    requests = (FORKING_REQUESTS if flavour == "forking" else REQUESTS)[transport]
    handler = {"kind": "datagram"} if transport == "udp" else {"kind": "stream"}
    with short_tmpdir() as tmpdir:
        reports = Reports()
        try:
            spec = {"flavour": flavour, "transport": transport, "tmpdir": tmpdir,
                    "report_fd": reports.fd, "handler": handler, "server": {}}
            with BatteryServer(module, variant, spec) as server:
                drive(loadgen, transport, server.address, WARMUP)
                before = settled_snapshot(server)
                result = drive(loadgen, transport, server.address, requests)
                after = settled_snapshot(server, like=before)
            assert reports.drain() == []  # no handle_error() call
        finally:
            reports.close()
    assert result["ops"] == requests and result["errors"] == 0, result
    if transport == "udp":
        assert result["lost"] == 0, result
    assert after["fds"] == before["fds"], (before, after)
    assert after["threads"] == before["threads"], (before, after)
    assert after["children"] == before["children"], (before, after)
    assert after["objects"] - before["objects"] < OBJECT_SLACK, (before, after)
    # Lasting children (the workers) stay the same processes.
    assert after["child_processes"].keys() == before["child_processes"].keys()
    for pid, child in before["child_processes"].items():
        assert after["child_processes"][pid]["fds"] == child["fds"], (pid, before, after)
    if os.environ.get("FASTSERVER_SANITIZER"):
        return  # tools/asan.sh: freed memory waits in ASan's quarantine, RSS grows
    assert after["rss"] < before["rss"] * (1 + RSS_GROWTH_LIMIT), (before, after)
    for pid, child in before["child_processes"].items():
        assert after["child_processes"][pid]["rss"] < child["rss"] * (1 + RSS_GROWTH_LIMIT)


def _settled_like(snapshot, like):
    """Are the threads and fds of the server, and of each of its lasting
    children (the workers), back to ``like``'s?  A worker closes the last
    connections of a run a moment after the client saw its answers (its
    handler reads their EOF), so the thread count alone settles too early."""
    if snapshot["threads"] != like["threads"] or snapshot["fds"] != like["fds"]:
        return False
    children = snapshot.get("child_processes", {})
    return all(pid in children and children[pid]["fds"] == child["fds"]
               for pid, child in like.get("child_processes", {}).items())


def settled_snapshot(server, like=None):
    """A leak snapshot once the last requests' threads and connections have
    ended: when threads and fds are back to ``like``'s, or (without
    ``like``, or after TIMEOUT) when the thread count has not changed for
    0.1 s."""
    deadline = time.monotonic() + TIMEOUT
    previous = server.leak_snapshot()
    steady_since = time.monotonic()
    while time.monotonic() < deadline:
        if like is not None and _settled_like(previous, like):
            return previous
        time.sleep(0.02)
        snapshot = server.leak_snapshot()
        if snapshot["threads"] != previous["threads"]:
            steady_since = time.monotonic()
        elif like is None and time.monotonic() - steady_since >= 0.1:
            return snapshot
        previous = snapshot
    return previous
