"""Helpers shared by the test modules.  Only ADD functions here."""

# ---------------------------------------------------------------------------
# Helpers for test_handlers.py, test_stdlib_handlers.py, test_robustness.py
# and test_cpython_suite.py.
# ---------------------------------------------------------------------------
import contextlib as _contextlib
import os as _os
import shutil as _shutil
import socket as _socket
import tempfile as _tempfile
import threading as _threading

HOST = "127.0.0.1"
#: Upper bound for any single blocking wait in the tests (seconds).
TIMEOUT = 10.0


@_contextlib.contextmanager
def background_server(server, poll_interval=0.05, close=True):
    """Run ``server.serve_forever`` in a daemon thread for the ``with`` body.

    On exit: ``shutdown()`` (bounded by TIMEOUT), join the serving thread
    and ``server_close()``.  Fails if the loop does not stop.
    """
    thread = _threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name="serve_forever",
        daemon=True,
    )
    thread.start()
    failed = False
    try:
        yield server
    except BaseException:
        failed = True
        raise
    finally:
        stopper = _threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(TIMEOUT)
        thread.join(TIMEOUT)
        if close:
            server.server_close()
        if not failed:
            assert not stopper.is_alive(), "shutdown() did not return"
            assert not thread.is_alive(), "serve_forever() did not return"


@_contextlib.contextmanager
def short_tmpdir():
    """A fresh directory under /tmp (short enough for AF_UNIX paths)."""
    path = _tempfile.mkdtemp(prefix="fs", dir="/tmp")
    try:
        yield path
    finally:
        _shutil.rmtree(path, ignore_errors=True)


def tcp_connect(address, timeout=TIMEOUT):
    """A connected TCP client socket with a timeout."""
    return _socket.create_connection(address, timeout=timeout)


def unix_connect(path, timeout=TIMEOUT, bind_to=None):
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if bind_to is not None:
        sock.bind(bind_to)
    sock.connect(path)
    return sock


def recv_exactly(sock, n):
    """Receive exactly n bytes (fails on early EOF)."""
    chunks = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise AssertionError("EOF after %d of %d bytes" % (n - remaining, n))
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock):
    """Receive until the peer closes or shuts down its writing side."""
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def recv_line(sock):
    """Receive one line ending in b"\\n" (byte by byte: nothing read past it)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        buf += byte
    return bytes(buf)


def fastserver_path():
    """The sys.path entry fastserver was imported from (None if absent)."""
    try:
        import fastserver
    except ImportError:
        return None
    return _os.path.dirname(_os.path.dirname(_os.path.abspath(fastserver.__file__)))


# ---------------------------------------------------------------------------
# Helpers for test_api.py, test_examples.py, test_hooks.py and
# test_mixins.py.
# ---------------------------------------------------------------------------
import select as _select
import time as _time


def wait_until(predicate, timeout=TIMEOUT, interval=0.005):
    """Poll ``predicate()`` until it is true; return False on timeout."""
    deadline = _time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if _time.monotonic() >= deadline:
            return False
        _time.sleep(interval)


def wait_readable(fileobj, timeout=TIMEOUT):
    """True once ``fileobj`` (a socket, a server or an fd) is readable."""
    readable, _, _ = _select.select([fileobj], [], [], timeout)
    return bool(readable)


class ThreadCall:
    """Run ``func(*args, **kwargs)`` in a daemon thread.

    ``join(timeout)`` returns True when the call has finished; then
    ``result`` or ``exc`` (the BaseException it raised, or None) is set.
    """

    def __init__(self, func, *args, **kwargs):
        self.result = None
        self.exc = None
        self._done = _threading.Event()

        def run():
            try:
                self.result = func(*args, **kwargs)
            except BaseException as exc:  # reported to the test
                self.exc = exc
            finally:
                self._done.set()

        self.thread = _threading.Thread(target=run, daemon=True,
                                        name="ThreadCall-%s" % getattr(func, "__name__", "call"))
        self.thread.start()

    def join(self, timeout=TIMEOUT):
        finished = self._done.wait(timeout)
        if finished:
            self.thread.join(timeout)
        return finished

    @property
    def done(self):
        return self._done.is_set()


def tcp_roundtrip(address, data, timeout=TIMEOUT, shut_wr=False):
    """Send ``data`` over a new TCP connection and read the reply to EOF."""
    with tcp_connect(address, timeout) as sock:
        sock.sendall(data)
        if shut_wr:
            sock.shutdown(_socket.SHUT_WR)
        return recv_until_eof(sock)


def unix_stream_roundtrip(path, data, timeout=TIMEOUT, shut_wr=False):
    """Like tcp_roundtrip, over an AF_UNIX stream socket."""
    with unix_connect(path, timeout) as sock:
        sock.sendall(data)
        if shut_wr:
            sock.shutdown(_socket.SHUT_WR)
        return recv_until_eof(sock)


def udp_roundtrip(address, data, timeout=TIMEOUT, bufsize=65536):
    """Send one datagram to ``address`` and return the first reply."""
    with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, address)
        return sock.recv(bufsize)


def unix_dgram_roundtrip(path, data, client_path, timeout=TIMEOUT, bufsize=65536):
    """Send one AF_UNIX datagram from a socket bound to ``client_path``
    (a datagram server can only answer a bound client) and return the
    first reply."""
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind(client_path)
        try:
            sock.sendto(data, path)
            return sock.recv(bufsize)
        finally:
            try:
                _os.unlink(client_path)
            except OSError:
                pass


def reap_children():
    """Reap every exited child of this process; return their pids."""
    reaped = []
    while True:
        try:
            pid, _ = _os.waitpid(-1, _os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)


# ---------------------------------------------------------------------------
# Resource counts, for any test module (moved here from conftest.py, which
# pytest loads itself and which is not meant to be imported).
# ---------------------------------------------------------------------------


def open_fds():
    """The number of open file descriptors of this process: /proc/self/fd
    on Linux, /dev/fd on macOS and the BSDs (it counts the directory's own
    fd there, the same before and after)."""
    return len(_os.listdir("/proc/self/fd" if _os.path.isdir("/proc/self/fd") else "/dev/fd"))


# ---------------------------------------------------------------------------
# CPU time of the threads a budget is about (test_loop.py, test_pool.py,
# test_robustness.py's child, test_faults.py).
# ---------------------------------------------------------------------------


def thread_cpu_seconds(native_id, pid="self"):
    """User+system CPU time of one thread of a process, from
    /proc/PID/task/NATIVE_ID/stat (Linux)."""
    with open("/proc/%s/task/%d/stat" % (pid, native_id)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = _os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class ThreadsCPU:
    """The user+system CPU time some running threads (``threading.Thread``
    objects) of this process use, so that a CPU budget for a server's loop
    (and its workers) does not count the test's own client code::

        with ThreadsCPU([loop_thread]) as cpu:
            before = cpu.seconds()
            ...
            used = cpu.seconds() - before

    On Linux each thread's /proc/self/task/<native_id>/stat is opened at
    once and re-read in place: seconds() opens no fd, so it works in a
    process that has used up its fds on purpose (test_robustness.py's
    EMFILE child).  Elsewhere (macOS, the BSDs) no thread can read another
    one's CPU time, and the whole process's (os.times()) stands in: more
    than the threads', never less, so a budget kept there holds for the
    threads too.
    """

    def __init__(self, threads):
        self._fds = None
        self._ticks = None
        if _os.path.isdir("/proc/self/task"):
            self._ticks = _os.sysconf("SC_CLK_TCK")
            self._fds = []
            try:
                for thread in threads:
                    path = "/proc/self/task/%d/stat" % thread.native_id
                    self._fds.append(_os.open(path, _os.O_RDONLY))
            except BaseException:
                self.close()
                raise

    def seconds(self):
        if self._fds is None:
            times = _os.times()
            return times.user + times.system
        total = 0
        for fd in self._fds:
            fields = _os.pread(fd, 4096, 0).decode().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (ticks)
        return total / self._ticks

    def close(self):
        for fd in self._fds or ():
            _os.close(fd)
        self._fds = [] if self._fds is not None else None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
