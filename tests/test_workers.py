"""PreforkMixIn: N worker processes behind one bound address, supervised.

Every test reaps what it forks: the supervisor reaps its workers, the tests
check that nothing is left (os.waitpid(-1, WNOHANG) raises
ChildProcessError) and, for workers of a subprocess, that their pids are
gone.  Processes are only ever signalled by pid.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import util
import variants
from util import open_fds

if not hasattr(os, "fork"):  # fastserver.workers defines PreforkMixIn where there is fork()
    pytest.skip("no fork() here", allow_module_level=True)

from fastserver.servers import TCPServer
from fastserver.workers import (
    PreforkMixIn,
    PreforkTCPServer,
    PreforkUDPServer,
)
from fastserver.workers import exits as workers_exits

HOST = util.HOST
TIMEOUT = util.TIMEOUT
LINUX = sys.platform.startswith("linux")
HAS_UNIX = hasattr(socket, "AF_UNIX")

# The tests run the supervisor in a thread, so Python 3.12+ warns that a
# process with threads forks; that is the tests' set-up, not the feature.
pytestmark = pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def pid_handler(module):
    """Replies with the pid of the process that handled the request."""

    class Handler(module.BaseRequestHandler):
        def handle(self):
            self.request.sendall(str(os.getpid()).encode())

    return Handler


def ask_pid(address):
    return int(util.tcp_roundtrip(address, b""))


def pids_seen(address, wanted, attempts=200):
    """Distinct handler pids over up to ``attempts`` connections (stops at
    ``wanted``): SO_REUSEPORT spreads connections by their source port."""
    seen = set()
    for _ in range(attempts):
        seen.add(ask_pid(address))
        if len(seen) >= wanted:
            break
    return seen


def assert_no_children():
    """Every child of this process was reaped."""
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def process_state(pid):
    """The state letter of /proc/PID/stat, or None once the pid is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def exited(pid):
    """Gone, or a zombie waiting for its (new) parent to reap it."""
    return process_state(pid) in (None, "Z", "X")


def children_of(pid):
    """The pids whose parent is ``pid`` (from /proc)."""
    children = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            children.append(int(name))
    return children


def serve_in_thread(server, poll_interval=0.05):
    return util.ThreadCall(server.serve_forever, poll_interval)


def wait_for_workers(server, count):
    assert util.wait_until(lambda: len(server.worker_pids) == count), server.worker_pids
    return list(server.worker_pids)


class Recorder:
    """Collects worker_exited() calls instead of printing them."""

    def __init__(self):
        self.exits = []

    def mixin(self):
        recorder = self

        class Recording:
            def worker_exited(self, pid, status):
                recorder.exits.append((pid, status))

        return Recording


# ---------------------------------------------------------------------------
# Serving from several processes
# ---------------------------------------------------------------------------
def test_requests_are_served_by_two_worker_processes(fs):
    server = PreforkTCPServer((HOST, 0), pid_handler(fs))
    server.workers = 2
    with util.background_server(server):
        workers = wait_for_workers(server, 2)
        seen = pids_seen(server.server_address, 2)
        assert seen == set(workers)
        assert os.getpid() not in seen
    assert server.worker_pids == []
    assert_no_children()


@pytest.mark.skipif(not LINUX, reason="SO_REUSEPORT balancing is Linux's")
def test_each_worker_holds_only_its_own_listener(fs):
    """A worker closes the other workers' listeners and the supervisor's
    poller and exit watches; its own listener stays blocking (the core's
    C accept path takes only blocking listeners)."""

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            listening = pidfds = 0
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                try:
                    target = os.readlink("/proc/self/fd/%d" % fd)
                except OSError:
                    continue
                if target == "anon_inode:[pidfd]":
                    pidfds += 1
                if target.startswith("socket:"):
                    sock = socket.socket(fileno=fd)
                    try:
                        listening += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    finally:
                        sock.detach()
            timeout = self.server.socket.gettimeout()
            reply = "%d %d %d %s" % (os.getpid(), listening, pidfds, timeout)
            self.request.sendall(reply.encode())

    server = PreforkTCPServer((HOST, 0), Handler)
    server.workers = 2
    assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    with util.background_server(server):
        wait_for_workers(server, 2)
        replies = {}
        for _ in range(200):
            pid, listening, pidfds, timeout = util.tcp_roundtrip(
                server.server_address, b"").decode().split()
            replies[pid] = (listening, pidfds, timeout)
            if len(replies) == 2:
                break
    assert list(replies.values()) == [("1", "0", "None")] * 2
    assert_no_children()


def test_shared_listener_when_reuse_port_is_off(fs):
    """reuse_port = False: every worker accepts on server.socket, which is
    non-blocking while they run and blocking again afterwards.  A worker
    busy with one client leaves the next connection to the other one."""

    class Handler(fs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            reply = "%d %s\n" % (os.getpid(), self.server.socket.gettimeout())
            self.wfile.write(reply.encode())

    class Server(PreforkMixIn, TCPServer):
        reuse_port = False
        workers = 2

    server = Server((HOST, 0), Handler)
    if hasattr(socket, "SO_REUSEPORT"):
        assert not server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    with util.background_server(server, close=False):
        wait_for_workers(server, 2)
        first, second = both_workers_reply(server.server_address, util.tcp_connect)
        assert first[0] != second[0]
        assert first[1] == second[1] == "0.0"
    assert server.socket.gettimeout() is None
    server.server_close()
    assert_no_children()


def both_workers_reply(address, connect):
    """Occupy one worker with a connection that has not sent its line yet,
    so that the other worker must take the second connection."""
    with connect(address) as waiting, connect(address) as served:
        time.sleep(0.05)  # let a worker take `waiting` (the test holds either way)
        served.sendall(b"go\n")
        second = util.recv_line(served).split()
        waiting.sendall(b"go\n")
        first = util.recv_line(waiting).split()
    return [x.decode() for x in first], [x.decode() for x in second]


def test_handle_request_serves_in_the_calling_process(fs):
    with PreforkTCPServer((HOST, 0), pid_handler(fs)) as server:
        server.workers = 2
        with util.tcp_connect(server.server_address) as client:
            server.handle_request()
            assert int(util.recv_until_eof(client)) == os.getpid()
    assert_no_children()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6(fs):
    class Server(PreforkTCPServer):
        address_family = socket.AF_INET6
        workers = 2

    try:
        server = Server(("::1", 0), pid_handler(fs))
    except OSError as exc:
        pytest.skip("no IPv6 loopback: %s" % exc)
    with util.background_server(server):
        workers = wait_for_workers(server, 2)
        assert pids_seen(server.server_address[:2], 2) == set(workers)
    assert_no_children()


def test_udp(fs):
    class Handler(fs.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(data + b" " + str(os.getpid()).encode(), self.client_address)

    server = PreforkUDPServer((HOST, 0), Handler)
    server.workers = 2
    with util.background_server(server):
        workers = wait_for_workers(server, 2)
        seen = set()
        for _ in range(200):  # each client socket has its own source port
            data, pid = util.udp_roundtrip(server.server_address, b"ping").split()
            assert data == b"ping"
            seen.add(int(pid))
            if len(seen) == 2:
                break
        assert seen == set(workers)
    assert_no_children()


@pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
def test_unix_stream(fs):
    from fastserver.workers import PreforkUnixStreamServer

    class Handler(fs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            self.wfile.write(("%d x\n" % os.getpid()).encode())

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "sock")
        server = PreforkUnixStreamServer(path, Handler)
        server.workers = 2
        with util.background_server(server):
            workers = wait_for_workers(server, 2)
            first, second = both_workers_reply(path, util.unix_connect)
            assert {int(first[0]), int(second[0])} == set(workers)
    assert_no_children()


@pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
def test_unix_datagram(fs):
    from fastserver.workers import PreforkUnixDatagramServer

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            _data, sock = self.request
            sock.sendto(str(os.getpid()).encode(), self.client_address)

    with util.short_tmpdir() as tmp:
        path = os.path.join(tmp, "sock")
        server = PreforkUnixDatagramServer(path, Handler)
        server.workers = 2
        with util.background_server(server):
            workers = wait_for_workers(server, 2)
            for i in range(5):
                reply = util.unix_dgram_roundtrip(path, b"ping", os.path.join(tmp, "c%d" % i))
                assert int(reply) in workers
    assert_no_children()


# ---------------------------------------------------------------------------
# Combined with the concurrency mix-ins
# ---------------------------------------------------------------------------
def concurrency_mixins(fs):
    from fastserver.mixins import ForkingMixIn, ThreadingMixIn
    from fastserver.pool import ThreadPoolMixIn

    return {"threading": ThreadingMixIn, "thread-pool": ThreadPoolMixIn, "forking": ForkingMixIn}


@pytest.mark.parametrize("mixin", ["threading", "thread-pool", "forking"])
def test_combined_with_a_concurrency_mixin(fs, mixin):
    """Persistent connections served concurrently within each worker, and
    a request in flight at shutdown() finished before the worker exits."""
    mixins = concurrency_mixins(fs)

    class Handler(fs.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                if line == b"slow\n":
                    time.sleep(0.3)
                self.wfile.write(("%d %d\n" % (os.getpid(), threading.get_ident())).encode())

    class Server(PreforkMixIn, mixins[mixin], TCPServer):
        workers = 2

    server = Server((HOST, 0), Handler)
    thread = serve_in_thread(server)
    workers = wait_for_workers(server, 2)
    clients = [util.tcp_connect(server.server_address) for _ in range(6)]
    try:
        replies = []
        for client in clients:  # all open at once: no worker is tied to one
            client.sendall(b"hi\n")
            replies.append(util.recv_line(client).split())
        if mixin != "forking":  # ForkingMixIn answers from a child of a worker
            assert {int(pid) for pid, _ in replies} <= set(workers)
        assert len(set(map(tuple, replies))) == len(clients)  # a thread or process each
        clients[0].sendall(b"slow\n")
        for client in clients[1:]:  # their handlers end; clients[0]'s is busy
            client.close()
        time.sleep(0.1)  # the slow request is in its handler
        stopper = util.ThreadCall(server.shutdown)
        assert util.recv_line(clients[0]).split() == replies[0]
        clients[0].close()  # the handler's loop ends; the worker can exit
        assert stopper.join() and thread.join()
        assert thread.exc is None
    finally:
        for client in clients:
            client.close()
        server.server_close()
    assert all(not os.path.exists("/proc/%d" % pid) for pid in workers)
    assert_no_children()


# ---------------------------------------------------------------------------
# Supervision: restarts, crash loops, stopping
# ---------------------------------------------------------------------------
@pytest.fixture(params=["pidfd", "pipe"])
def exit_watch(request, monkeypatch):
    """How the supervisor learns of a worker's death: a pidfd (Linux 5.3+)
    or the pipe used where there is none."""
    if request.param == "pidfd":
        if not workers_exits._pidfds_available():
            pytest.skip("no pidfds here")
    else:
        monkeypatch.setattr(workers_exits, "_pidfds_work", False)
    return request.param


def test_killed_worker_is_replaced_and_nothing_is_refused(fs, exit_watch):
    recorder = Recorder()

    class Server(recorder.mixin(), PreforkTCPServer):
        workers = 2

    server = Server((HOST, 0), pid_handler(fs))
    with util.background_server(server):
        old = wait_for_workers(server, 2)
        victim = old[0]
        os.kill(victim, signal.SIGKILL)
        # Right away, before and while the worker is replaced: connections
        # for the dead worker's socket wait in its backlog, none is reset.
        answers = [ask_pid(server.server_address) for _ in range(30)]
        assert util.wait_until(
            lambda: len(server.worker_pids) == 2 and victim not in server.worker_pids)
        new = server.worker_pids
        assert victim not in answers
        assert set(answers) <= set(old) | set(new)
        assert pids_seen(server.server_address, 2) == set(new)
    assert [pid for pid, _ in recorder.exits] == [victim]
    status = recorder.exits[0][1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert_no_children()


def test_crash_looping_worker_does_not_fork_storm(fs):
    """Workers that die right after starting are restarted with a growing
    delay: a handful of forks per second, not hundreds."""
    recorder = Recorder()

    class Server(recorder.mixin(), PreforkTCPServer):
        workers = 2

        def service_actions(self):  # runs in the workers' loops only
            os._exit(3)

    server = Server((HOST, 0), pid_handler(fs))
    with util.background_server(server, poll_interval=0.01):
        time.sleep(1.0)
        deaths = len(recorder.exits)
    # 2 workers, each dying within ~10 ms of its start: restarts after
    # 0.1, 0.2, 0.4 s ... make about 4 deaths each in a second.
    assert 2 <= deaths <= 12, deaths
    assert all(os.WIFEXITED(s) and os.WEXITSTATUS(s) == 3 for _, s in recorder.exits)
    assert_no_children()


def test_shutdown_leaves_no_child_and_no_fd(fs, exit_watch):
    before = open_fds()
    server = PreforkTCPServer((HOST, 0), pid_handler(fs))
    server.workers = 2
    with util.background_server(server):
        workers = wait_for_workers(server, 2)
        pids_seen(server.server_address, 1)
    assert_no_children()
    assert not any(os.path.exists("/proc/%d" % pid) for pid in workers)
    assert open_fds() == before


def test_serve_forever_can_run_again(fs):
    server = PreforkTCPServer((HOST, 0), pid_handler(fs))
    server.workers = 2
    try:
        for _ in range(2):
            with util.background_server(server, close=False):
                workers = wait_for_workers(server, 2)
                assert ask_pid(server.server_address) in workers
    finally:
        server.server_close()
    assert_no_children()


def test_server_close_stops_running_workers(fs):
    """server_close() without shutdown(): the workers are stopped first."""
    before = open_fds()
    server = PreforkTCPServer((HOST, 0), pid_handler(fs))
    server.workers = 2
    thread = serve_in_thread(server)
    workers = wait_for_workers(server, 2)
    server.server_close()
    assert thread.join()
    assert thread.exc is None
    assert server.worker_pids == []
    assert not any(os.path.exists("/proc/%d" % pid) for pid in workers)
    assert_no_children()
    assert open_fds() == before


def test_stuck_worker_is_killed_after_worker_stop_timeout(fs):
    recorder = Recorder()

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            self.request.recv(1)  # the client never sends: SIGTERM cannot end this

    class Server(recorder.mixin(), PreforkTCPServer):
        workers = 1
        worker_stop_timeout = 0.3

    server = Server((HOST, 0), Handler)
    thread = serve_in_thread(server)
    try:
        (worker,) = wait_for_workers(server, 1)
        with util.tcp_connect(server.server_address) as client:
            time.sleep(0.1)  # the worker is in recv()
            assert util.ThreadCall(server.shutdown).join()
            assert thread.join() and thread.exc is None
            assert util.recv_until_eof(client) == b""  # the kill closed it
    finally:
        server.server_close()
    assert recorder.exits == []  # a stop it asked for is not reported
    assert not os.path.exists("/proc/%d" % worker)
    assert_no_children()


def test_sigterm_to_one_worker_replaces_it(fs):
    """A worker stops on SIGTERM whenever it lands, even right after a
    request, when the compiled loop runs no Python code to call the
    handler; the supervisor then starts another."""
    recorder = Recorder()

    class Server(recorder.mixin(), PreforkTCPServer):
        workers = 2

    server = Server((HOST, 0), pid_handler(fs))
    victims = []
    with util.background_server(server):
        for _ in range(3):
            assert util.wait_until(lambda: len(server.worker_pids) == 2)
            victim = ask_pid(server.server_address)  # it has just served
            os.kill(victim, signal.SIGTERM)
            victims.append(victim)
            assert util.wait_until(lambda: len(recorder.exits) == len(victims))
    assert [pid for pid, _ in recorder.exits] == victims
    assert all(os.WIFEXITED(s) and os.WEXITSTATUS(s) == 0 for _, s in recorder.exits)
    assert_no_children()


def test_shutdown_flag_set_by_a_handler_stops_the_server(fs):
    """``server._BaseServer__shutdown_request = True`` in a handler stops
    serve_forever() in one process; here it stops every worker."""

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            self.server._BaseServer__shutdown_request = True
            self.request.sendall(b"bye")

    server = PreforkTCPServer((HOST, 0), Handler)
    server.workers = 2
    thread = serve_in_thread(server)
    try:
        workers = wait_for_workers(server, 2)
        assert util.tcp_roundtrip(server.server_address, b"") == b"bye"
        assert thread.join() and thread.exc is None
    finally:
        server.server_close()
    assert not any(os.path.exists("/proc/%d" % pid) for pid in workers)
    assert_no_children()


def test_workers_must_be_a_positive_int(fs):
    """Set after construction (which checks it too): serve_forever() refuses
    it before forking anything."""
    with PreforkTCPServer((HOST, 0), pid_handler(fs)) as server:
        for bad, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError),
                           (None, TypeError), (True, TypeError)):
            server.workers = bad
            with pytest.raises(error, match=r"^PreforkTCPServer\.workers must be an int >= 1"):
                server.serve_forever()
    assert_no_children()


def test_serve_forever_twice_at_once_is_an_error(fs):
    server = PreforkTCPServer((HOST, 0), pid_handler(fs))
    server.workers = 1
    with util.background_server(server):
        wait_for_workers(server, 1)
        with pytest.raises(RuntimeError):
            server.serve_forever()
    assert_no_children()


# ---------------------------------------------------------------------------
# The supervisor's own process: SIGTERM and SIGKILL
# ---------------------------------------------------------------------------
SUPERVISOR_SCRIPT = variants.CHILD_IMPORT + """
import os, signal
from fastserver import workers

# SIGINT raises KeyboardInterrupt, as in a terminal: a test runner started
# as a background job has SIGINT ignored, and the child would inherit that
# (Python keeps an ignored SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)

class Handler(ss.BaseRequestHandler):
    def handle(self):
        self.request.sendall(str(os.getpid()).encode())

with workers.PreforkTCPServer(("127.0.0.1", 0), Handler) as server:
    server.workers = 2
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.1)
print("serve_forever returned", flush=True)
"""


class Supervisor:
    """A subprocess running SUPERVISOR_SCRIPT in its main thread, on the
    variant the test names (its ``fs_native`` fixture only serves to name
    one: each core on its native poller)."""

    def __init__(self, variant):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR_SCRIPT],
            stdout=subprocess.PIPE,
            env=variants.child_env(variant),
        )
        try:
            self.port = int(self.proc.stdout.readline())
            assert util.wait_until(lambda: len(children_of(self.proc.pid)) == 2)
            self.workers = children_of(self.proc.pid)
        except BaseException:
            self.kill()
            raise

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")


@needs_proc
def test_sigterm_to_the_supervisor_stops_everything(fs_native, variant):
    supervisor = Supervisor(variant)
    try:
        assert ask_pid((HOST, supervisor.port)) in supervisor.workers
        os.kill(supervisor.proc.pid, signal.SIGTERM)
        assert supervisor.proc.wait(TIMEOUT) == 0
        assert supervisor.proc.stdout.read() == b"serve_forever returned\n"
    finally:
        supervisor.kill()
    assert all(exited(pid) for pid in supervisor.workers)


@needs_proc
def test_ctrl_c_in_the_supervisor_stops_the_workers_first(fs_native, variant):
    """KeyboardInterrupt leaves serve_forever() once the workers are gone."""
    supervisor = Supervisor(variant)
    try:
        assert ask_pid((HOST, supervisor.port)) in supervisor.workers
        os.kill(supervisor.proc.pid, signal.SIGINT)
        assert supervisor.proc.wait(TIMEOUT) == -signal.SIGINT
    finally:
        supervisor.kill()
    assert all(exited(pid) for pid in supervisor.workers)


@needs_proc
def test_workers_exit_when_the_supervisor_is_killed(fs_native, variant):
    supervisor = Supervisor(variant)
    try:
        assert ask_pid((HOST, supervisor.port)) in supervisor.workers
    finally:
        supervisor.kill()  # SIGKILL: no chance to stop its workers
    assert util.wait_until(lambda: all(exited(pid) for pid in supervisor.workers))
