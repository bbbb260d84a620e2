"""Shared pieces of the survival battery, which checks that every server
flavour outlives hostile clients and system faults and leaks nothing over
long runs (README.md, "Tests"): test_hostile.py, test_faults.py,
test_leaks.py and bench/soak.py.

- the flavour registry: every server flavour (sync, threading, forking,
  thread pool, multi-core workers) over every transport (TCP, UDP, Unix
  stream, Unix datagram); the thread pool and the workers exist only in
  fastserver, and are skipped on the stdlib with the reason;
- a report channel that handlers and ``handle_error`` write to from any
  thread or forked process, so a test sees what happened server-side even
  when the handler ran in a child;
- the battery's echo handlers and hostile client moves (RST, vanish, ...);
- resource probes: fds, threads, child processes and RSS of a process;
- BatteryServer: one such server running for a ``with`` body, in this
  process or in a child process of its own, checked for leaks on exit.
"""
import contextlib
import fcntl
import importlib
import json
import os
import queue
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import variants
from util import HOST, TIMEOUT, background_server

# ---------------------------------------------------------------------------
# Flavours and transports
# ---------------------------------------------------------------------------

#: Every server flavour the battery runs.  "pool" and "workers" are
#: fastserver's own: the stdlib skips them, with the reason.
FLAVOURS = ("sync", "threading", "forking", "pool", "workers", "green")

#: transport name -> the stdlib base class name.
TRANSPORTS = {
    "tcp": "TCPServer",
    "udp": "UDPServer",
    "unix": "UnixStreamServer",
    "unix-dgram": "UnixDatagramServer",
}
STREAM_TRANSPORTS = ("tcp", "unix")
DATAGRAM_TRANSPORTS = ("udp", "unix-dgram")

#: Attributes each flavour's server gets, besides the mix-in.  Two worker
#: processes: enough to show one stuck worker does not stop the other.
FLAVOUR_ATTRIBUTES = {
    "pool": {"max_workers": 8},
    "workers": {"workers": 2},
}

# Where the flavours that are not in the stdlib live.
_EXTRA_FLAVOURS = {
    "pool": ("fastserver.pool", "ThreadPoolMixIn"),
    "workers": ("fastserver.workers", "PreforkMixIn"),
    "green": ("fastserver.green", "GreenMixIn"),
}

#: Python 3.12+ warns when a multi-threaded process forks: the forking and
#: workers flavours do exactly that on purpose, from the test's threads.
FORK_WARNING_FILTER = "ignore:This process .* is multi-threaded:DeprecationWarning"


def is_stdlib(module):
    return module.__name__ == "socketserver"


def skip(reason):
    import pytest  # imported here: server children load this module too

    pytest.skip(reason)


def flavour_mixin(module, flavour):
    """The mix-in class of ``flavour`` for ``module`` (None for "sync"), or
    a pytest skip with the reason it cannot run here."""
    if flavour == "sync":
        return None
    if flavour == "threading":
        return module.ThreadingMixIn
    if flavour in FORKING_FLAVOURS and not hasattr(os, "fork"):
        skip("no os.fork() on this platform")
    if flavour == "forking":
        return module.ForkingMixIn
    module_name, class_name = _EXTRA_FLAVOURS[flavour]
    if is_stdlib(module):
        skip("the stdlib has no %s flavour" % flavour)
    # Imported, not looked for: a flavour that was renamed or removed fails
    # the battery instead of skipping it.
    extra = importlib.import_module(module_name)
    if flavour == "green":
        reason = extra.green_unavailable()
        if reason is not None:
            skip(reason)
    return getattr(extra, class_name)


def server_class(module, flavour, transport, base_extra=(), **attributes):
    """A server class: the flavour's mix-in, the ``base_extra`` mix-ins (such
    as Reporting) and the transport's base class, with ``attributes``."""
    if transport.startswith("unix") and not hasattr(socket, "AF_UNIX"):
        skip("no AF_UNIX on this platform")
    base = getattr(module, TRANSPORTS[transport])
    if flavour == "green" and transport in DATAGRAM_TRANSPORTS:
        skip("green handlers serve stream connections")
    mixin = flavour_mixin(module, flavour)
    bases = ((mixin,) if mixin is not None else ()) + tuple(base_extra) + (base,)
    namespace = dict(FLAVOUR_ATTRIBUTES.get(flavour, {}))
    namespace.setdefault("request_queue_size", 128)  # no SYN drops under bursts
    namespace.update(attributes)
    assert_settings_exist(bases, namespace)
    return type("%s_%s_server" % (flavour, transport.replace("-", "_")), bases, namespace)


def assert_settings_exist(bases, settings):
    """Each of ``settings`` is an attribute one of ``bases`` has.  The
    battery sets them as class attributes: a setting that was renamed or
    removed would otherwise be ignored without a word, and the test would
    pass or fail for another reason."""
    unknown = sorted(name for name in settings if not any(hasattr(base, name) for base in bases))
    assert not unknown, "no such setting on %s: %s" % (
        ", ".join(base.__name__ for base in bases), ", ".join(unknown))


def server_address(transport, tmpdir, name="server.sock"):
    if transport in ("tcp", "udp"):
        return (HOST, 0)
    return os.path.join(tmpdir, name)


def stream_connect(transport, address, timeout=TIMEOUT):
    """A connected client socket (TCP or Unix stream) with a timeout."""
    if transport == "tcp":
        return socket.create_connection(address, timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def datagram_client(transport, tmpdir, name="client.sock", timeout=TIMEOUT):
    """A datagram client socket; a Unix one is bound, or it gets no reply."""
    family = socket.AF_INET if transport == "udp" else socket.AF_UNIX
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    if family == socket.AF_UNIX:
        sock.bind(os.path.join(tmpdir, name))
    return sock


# ---------------------------------------------------------------------------
# The report channel
# ---------------------------------------------------------------------------


class Reports:
    """A pipe the server side reports to, one short line per event, from any
    thread or forked child: ``send_report(reports.fd, text)``.

    A child server process gets the write end through ``pass_fds``; forked
    children inherit it.  Writes of a line are atomic (shorter than
    PIPE_BUF) and the pipe is made large, and a thread moves each report
    into a queue at once, so a burst of reports never blocks the server
    under test.
    """

    PIPE_SIZE = 1 << 20

    def __init__(self):
        self._read_fd, self.fd = os.pipe()
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            try:
                fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, self.PIPE_SIZE)
            except OSError:  # above /proc/sys/fs/pipe-max-size: keep the default
                pass
        self._queue = queue.Queue()
        self._closing = False
        self._reader = threading.Thread(target=self._read, name="reports", daemon=True)
        self._reader.start()

    def _read(self):
        pending = b""
        poller = select.poll()  # not select(): the fd may be above 1024
        poller.register(self._read_fd, select.POLLIN)
        while not self._closing:
            if not poller.poll(50):
                continue
            data = os.read(self._read_fd, 1 << 16)
            if not data:
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                self._queue.put(line.decode())

    def get(self, timeout=TIMEOUT):
        """The next report; AssertionError if none comes in ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no report from the server within %.1f s" % timeout) from None

    def wait_for(self, predicate, timeout=TIMEOUT):
        """Reports until one satisfies ``predicate``; returns (it, the others)."""
        seen = []
        while True:
            report = self.get(timeout)
            if predicate(report):
                return report, seen
            seen.append(report)

    def drain(self, settle=0.05):
        """Every report sent so far (after ``settle`` seconds for the last
        ones to arrive), without waiting for more."""
        time.sleep(settle)
        reports = []
        while True:
            try:
                reports.append(self._queue.get_nowait())
            except queue.Empty:
                return reports

    def close(self):
        self._closing = True
        self._reader.join(TIMEOUT)
        os.close(self._read_fd)
        os.close(self.fd)


def send_report(fd, text):
    """Report ``text`` (one line) to the test; a no-op when ``fd`` is None."""
    if fd is not None:
        os.write(fd, text.encode() + b"\n")


class Reporting:
    """Server mix-in: ``handle_error`` reports ``error:<exception name>``
    (instead of printing a traceback) to ``self.report_fd``."""

    report_fd = None

    def handle_error(self, request, client_address):
        send_report(self.report_fd, "error:" + sys.exc_info()[0].__name__)


#: The errors a handler may see when its client misbehaves at the socket
#: level.  Anything else in the reports is a finding.
CLIENT_ERRORS = frozenset(
    "error:" + name
    for name in ("ConnectionResetError", "BrokenPipeError", "ConnectionAbortedError",
                 "TimeoutError", "timeout")
)


# ---------------------------------------------------------------------------
# The battery's handlers
# ---------------------------------------------------------------------------

#: The line that asks the stream handler to write until writing fails.
FLOOD = b"flood\n"
FLOOD_CHUNK = 1 << 16
#: A bound on a flood, so a handler whose writes never fail still ends.
FLOOD_LIMIT = 1 << 30


def stream_echo_handler(module, timeout=None, report_each=False, **attributes):
    """A StreamRequestHandler that echoes each line until EOF.

    ``flood`` writes until a write fails (the client is not reading) and
    reports ``flooding`` then ``flood-error:<exception name>``,
    ``pid`` answers the serving process id, ``raise`` raises ValueError.
    With ``report_each`` it reports ``eof`` when the client has hung up.
    """

    class StreamEcho(module.StreamRequestHandler):
        def handle(self):
            report_fd = getattr(self.server, "report_fd", None)
            for line in self.rfile:
                if line == FLOOD:
                    self.flood(report_fd)
                elif line == b"pid\n":
                    self.wfile.write(b"%d\n" % os.getpid())
                elif line == b"raise\n":
                    raise ValueError("requested failure")
                else:
                    self.wfile.write(line)
            if report_each:
                send_report(report_fd, "eof")

        def flood(self, report_fd):
            """Write until a write fails; report ``flood-error:<name>``."""
            send_report(report_fd, "flooding")
            chunk = b"f" * FLOOD_CHUNK
            try:
                for _ in range(FLOOD_LIMIT // FLOOD_CHUNK):
                    self.wfile.write(chunk)
            except Exception as exc:
                send_report(report_fd, "flood-error:" + type(exc).__name__)
                raise

    assert_settings_exist((module.StreamRequestHandler,), attributes)
    StreamEcho.timeout = timeout
    for name, value in attributes.items():
        setattr(StreamEcho, name, value)
    return StreamEcho


def datagram_echo_handler(module):
    """A DatagramRequestHandler that answers each datagram with itself."""

    class DatagramEcho(module.DatagramRequestHandler):
        def handle(self):
            if self.packet == b"raise":
                raise ValueError("requested failure")
            self.wfile.write(self.packet)

    return DatagramEcho


# ---------------------------------------------------------------------------
# Client moves
# ---------------------------------------------------------------------------


def rst_close(sock):
    """Close with SO_LINGER (on, 0): a TCP peer gets an RST, not a FIN."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_to_eof(sock, limit=1 << 30):
    """Everything until EOF (at most ``limit`` bytes)."""
    chunks, total = [], 0
    while total < limit:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def exchange(transport, address, data, timeout=TIMEOUT):
    """Send ``data``, half-close, and return the whole answer."""
    with stream_connect(transport, address, timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_to_eof(sock)


# ---------------------------------------------------------------------------
# Resource probes (Linux /proc)
# ---------------------------------------------------------------------------

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def fd_count(pid="self"):
    return len(os.listdir("/proc/%s/fd" % pid))


def thread_count(pid="self"):
    return len(os.listdir("/proc/%s/task" % pid))


def child_pids(pid="self"):
    """The live and zombie children of a process."""
    children = []
    for task in os.listdir("/proc/%s/task" % pid):
        try:
            with open("/proc/%s/task/%s/children" % (pid, task)) as f:
                children.extend(int(child) for child in f.read().split())
        except FileNotFoundError:  # the thread has just exited
            pass
    return sorted(children)


def rss_bytes(pid="self"):
    with open("/proc/%s/statm" % pid) as f:
        return int(f.read().split()[1]) * PAGE_SIZE


class Snapshot:
    """fds, threads, children and RSS of a process at one moment."""

    def __init__(self, pid="self"):
        self.fds = fd_count(pid)
        self.threads = thread_count(pid)
        self.children = child_pids(pid)
        self.rss = rss_bytes(pid)

    def as_dict(self):
        return {"fds": self.fds, "threads": self.threads,
                "children": len(self.children), "rss_mb": round(self.rss / 2**20, 1)}


def leak_snapshot(settle_children=True):
    """This process's resources for a leak check, once its forked children
    (of ForkingMixIn) are gone: the Snapshot fields, the count of objects
    the garbage collector tracks, and fds and RSS of each lasting child
    (the workers of PreforkMixIn)."""
    import gc

    if settle_children:
        deadline = time.monotonic() + TIMEOUT
        while child_pids() and time.monotonic() < deadline and not _lasting_children():
            time.sleep(0.01)
    gc.collect()
    snapshot = Snapshot()
    result = snapshot.as_dict()
    result["rss"] = snapshot.rss
    result["objects"] = len(gc.get_objects())
    result["child_processes"] = {}
    for pid in snapshot.children:
        try:
            result["child_processes"][str(pid)] = {"fds": fd_count(pid), "rss": rss_bytes(pid)}
        except (FileNotFoundError, ProcessLookupError):  # it has just ended
            pass
    return result


def _lasting_children():
    """True when every child is a worker process that lives as long as the
    server (PreforkMixIn), not a per-request child still finishing."""
    return os.environ.get("FASTSERVER_TEST_LASTING_CHILDREN") == "1"

    def __repr__(self):
        return "Snapshot(%r)" % (self.as_dict(),)


@contextlib.contextmanager
def nofile_limit(wanted):
    """Raise this process's soft RLIMIT_NOFILE to ``wanted`` (at most the
    hard limit) for the ``with`` body; skip if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        skip("RLIMIT_NOFILE hard limit %d < %d needed" % (hard, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))




# ---------------------------------------------------------------------------
# Battery servers: in this process, or in a child for the flavours that fork
# ---------------------------------------------------------------------------

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

#: Flavours whose servers run in a child process.  A process that forks
#: hands its children a copy of every fd it holds; a forked handler would
#: then keep the test's own client sockets open, and a client's close()
#: or RST would never reach the server.
FORKING_FLAVOURS = ("forking", "workers")


def make_battery_server(module, spec):
    """The server ``spec`` describes (a JSON-able dict):

    ``flavour``, ``transport``, ``tmpdir`` (for Unix socket paths),
    ``report_fd``, ``handler`` (``{"kind": "stream", ...}`` with the
    keyword arguments of stream_echo_handler, or ``{"kind": "datagram"}``)
    and ``server`` (class attributes, such as max_packet_size);
    BatteryServer also reads ``in_child`` (run it in a child process) and
    ``nofile`` (the child's RLIMIT_NOFILE).
    """
    handler_spec = dict(spec.get("handler") or {"kind": "stream"})
    if handler_spec.pop("kind") == "stream":
        handler = stream_echo_handler(module, **handler_spec)
    else:
        handler = datagram_echo_handler(module)
    cls = server_class(module, spec["flavour"], spec["transport"], base_extra=(Reporting,),
                       report_fd=spec.get("report_fd"), **spec.get("server", {}))
    return cls(server_address(spec["transport"], spec["tmpdir"]), handler)


#: The child that serves one battery server: it prints ``READY {address,
#: before}``, serves until its stdin says QUIT, then prints ``DONE {after}``
#: (``before``/``after``: Snapshot.as_dict() around the server's life).
SERVER_CHILD = variants.CHILD_IMPORT + '''
import json, sys, warnings
warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
import hostile_util as hu
from util import background_server

spec = json.loads(sys.argv[1])
if spec.get("nofile"):  # room for many connections (bench/soak.py's idle ones)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(spec["nofile"], hard), hard))
before = hu.Snapshot().as_dict()
server = hu.make_battery_server(ss, spec)
with background_server(server):
    print("READY", json.dumps({"address": server.server_address, "before": before}), flush=True)
    for line in sys.stdin:
        if line.strip() == "QUIT":
            break
        if line.strip() == "SNAPSHOT":
            print("SNAPSHOT", json.dumps(hu.leak_snapshot()), flush=True)
print("DONE", json.dumps(hu.Snapshot().as_dict()), flush=True)
'''


class ChildProcess:
    """A Python child that speaks a line protocol: it prints ``WORD rest``
    lines on stdout and reads words on stdin."""

    def __init__(self, source, env, args=(), pass_fds=()):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, text=True, pass_fds=pass_fds,
        )
        self.pid = self.proc.pid
        self.lines = queue.Queue()
        self.stderr = []
        pumps = ((self.proc.stdout, self.lines.put), (self.proc.stderr, self.stderr.append))
        for stream, put in pumps:
            threading.Thread(target=self._pump, args=(stream, put), daemon=True).start()

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)

    def expect(self, word, timeout=TIMEOUT * 2):
        """The rest of the next stdout line, which must start with ``word``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("child said nothing while we waited for %s; stderr:\n%s"
                                 % (word, "".join(self.stderr))) from None
        parts = line.split(None, 1)
        assert parts and parts[0] == word, "expected %s, got %r; stderr:\n%s" % (
            word, line, "".join(self.stderr))
        return parts[1].strip() if len(parts) > 1 else ""

    def send(self, word):
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def close(self, timeout=TIMEOUT):
        """Wait for the child to exit (kill it after ``timeout``); return its
        exit code."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        return self.proc.returncode


def stacks_of(pid):
    """The Python stacks of a process and its children, for a failure
    message (with py-spy where installed; the kernel's wait channels
    otherwise)."""
    import shutil

    lines = []
    for each in [pid] + child_pids(pid):
        try:
            with open("/proc/%d/wchan" % each) as f:
                lines.append("pid %d waits in %s" % (each, f.read()))
        except OSError:
            continue
        if shutil.which("py-spy"):
            try:
                dump = subprocess.run(["py-spy", "dump", "--pid", str(each)],
                                      capture_output=True, text=True, timeout=TIMEOUT)
                lines.append(dump.stdout + dump.stderr)
            except subprocess.TimeoutExpired:
                lines.append("(py-spy took too long)")
    return "\n".join(lines)


def settled_snapshot(like=None, timeout=TIMEOUT):
    """This process's Snapshot.as_dict() once garbage is collected (a socket
    an earlier test dropped closes then, not in the middle of ours) and, with
    ``like``, once fds and threads are back to its counts or ``timeout``
    has passed (a handler thread may still be on its way out)."""
    import gc

    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        snapshot = Snapshot().as_dict()
        if like is None or time.monotonic() > deadline or (
                snapshot["fds"] == like["fds"] and snapshot["threads"] <= like["threads"]):
            return snapshot
        time.sleep(0.01)


def _json_address(address):
    return tuple(address) if isinstance(address, list) else address


class BatteryServer:
    """A running battery server for the ``with`` body: ``address``, ``pid``
    (the process that owns the listener).

    On exit it stops the server and checks that it gave back every fd and
    reaped every child it made.  Servers of FORKING_FLAVOURS run in a child
    process (see there); the others run here, so tests may look inside.
    """

    def __init__(self, module, variant, spec, stop_timeout=TIMEOUT * 2):
        self.module, self.variant, self.spec = module, variant, spec
        self.stop_timeout = stop_timeout  # for a child: how long stopping may take
        self.in_child = spec.get("in_child") or spec["flavour"] in FORKING_FLAVOURS
        self.server = self.child = None

    def __enter__(self):
        if self.in_child:
            flavour_mixin(self.module, self.spec["flavour"])  # skip here if unavailable
            env = variants.child_env(self.variant, extra_path=[TESTS_DIR])
            if self.spec["flavour"] == "workers":
                env["FASTSERVER_TEST_LASTING_CHILDREN"] = "1"
            report_fd = self.spec.get("report_fd")
            self.child = ChildProcess(SERVER_CHILD, env, args=[json.dumps(self.spec)],
                                      pass_fds=[] if report_fd is None else [report_fd])
            ready = json.loads(self.child.expect("READY"))
            self.address, self.before, self.pid = (
                _json_address(ready["address"]), ready["before"], self.child.pid)
        else:
            self.before = settled_snapshot()
            self.server = make_battery_server(self.module, self.spec)
            self._serving = background_server(self.server)
            self._serving.__enter__()
            self.address, self.pid = self.server.server_address, os.getpid()
        return self

    def leak_snapshot(self):
        """hostile_util.leak_snapshot() of the server's process."""
        if not self.in_child:
            return leak_snapshot()
        self.child.send("SNAPSHOT")
        return json.loads(self.child.expect("SNAPSHOT"))

    def __exit__(self, *exc_info):
        if self.in_child:
            try:
                self.child.send("QUIT")
                try:
                    after = json.loads(self.child.expect("DONE", timeout=self.stop_timeout))
                except AssertionError as exc:
                    raise AssertionError("%s\n%s" % (exc, stacks_of(self.child.pid))) from None
            finally:
                code = self.child.close()
            if exc_info[0] is None:
                assert code == 0, "".join(self.child.stderr)
        else:
            self._serving.__exit__(*exc_info)
            after = settled_snapshot(like=self.before)
        if exc_info[0] is None:
            assert after["fds"] == self.before["fds"], (self.before, after)
            assert after["children"] <= self.before["children"], (self.before, after)
        return False
