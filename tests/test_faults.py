"""System faults: what the kernel can throw at a server, which must survive it.

- accept() failing with ENFILE or ENOBUFS, and recvfrom() with
  ENOMEM: the loop backs off instead of spinning, and serves the waiting
  clients once the fault is gone (EMFILE, with a real RLIMIT_NOFILE, is in
  test_robustness.py);
- send()/sendto() failing with EAGAIN or ENOBUFS inside a handler: the
  stdlib's exception reaches handle_error() (or, on a socket with a
  timeout, EAGAIN is retried), and the next request is served;
- an EINTR storm: SIGALRM every millisecond while serve_forever() waits
  and while handlers block in rfile reads and wfile writes;
- fork() from a handler and from the serving thread: the child never
  shares, steals or closes the parent's poller and waker;
- shutdown() from many threads at once, before and after serve_forever();
  server_close() while the loop serves.

ENFILE (the system-wide file table is full) cannot be produced for real
without changing /proc/sys/fs/file-max for the whole machine, so the
errors above are injected: the servers run in a child process with a small
LD_PRELOAD library (FAULT_SHIM below, built with the system C compiler)
that wraps accept4/accept/send/sendto/recv/recvfrom/recvmsg/recvmmsg/poll/
epoll_wait.  It
makes the next calls on one fd fail with a chosen errno, and counts calls
and the EINTRs the real calls returned.  Both cores and the stdlib make
their system calls through libc, so the same faults reach all of them.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fastserver

import variants
from hostile_util import (
    FORK_WARNING_FILTER,
    ChildProcess,
    fd_count,
)
from util import (
    HOST,
    TIMEOUT,
    ThreadCall,
    reap_children,
    recv_until_eof,
    tcp_connect,
    thread_cpu_seconds,
    wait_until,
)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# The fault-injection library
# ---------------------------------------------------------------------------

FAULT_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* The calls this library wraps, by index. */
enum { ACCEPT4, ACCEPT, SEND, SENDTO, RECV, RECVFROM, RECVMSG, RECVMMSG, POLL, EPOLL_WAIT,
       NCALLS };
static const char *const names[NCALLS] = {
    "accept4", "accept", "send", "sendto", "recv", "recvfrom", "recvmsg", "recvmmsg", "poll",
    "epoll_wait"};

static long calls[NCALLS];        /* calls made */
static long eintrs[NCALLS];       /* real calls that returned EINTR */
static int inject_errno[NCALLS];  /* the errno to inject */
static int inject_fd[NCALLS];     /* only on this fd (-1: any) */
static long inject_left[NCALLS];  /* calls still to fail; -1: until cleared */

static int index_of(const char *name)
{
    for (int i = 0; i < NCALLS; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

/* Make the next `count` calls of `name` on `fd` fail with `err`. */
int fault_inject(const char *name, int err, long count, int fd)
{
    int i = index_of(name);
    if (i < 0)
        return -1;
    __atomic_store_n(&inject_left[i], 0, __ATOMIC_SEQ_CST);
    inject_errno[i] = err;
    inject_fd[i] = fd;
    __atomic_store_n(&inject_left[i], count, __ATOMIC_SEQ_CST);
    return 0;
}

long fault_calls(const char *name)
{
    int i = index_of(name);
    return i < 0 ? -1 : __atomic_load_n(&calls[i], __ATOMIC_SEQ_CST);
}

long fault_eintrs(const char *name)
{
    int i = index_of(name);
    return i < 0 ? -1 : __atomic_load_n(&eintrs[i], __ATOMIC_SEQ_CST);
}

/* The errno to fail this call with, or 0 to make the real call. */
static int take_fault(int i, int fd)
{
    __atomic_add_fetch(&calls[i], 1, __ATOMIC_SEQ_CST);
    long left = __atomic_load_n(&inject_left[i], __ATOMIC_SEQ_CST);
    while (left != 0 && (inject_fd[i] < 0 || inject_fd[i] == fd)) {
        if (left < 0)
            return inject_errno[i];
        if (__atomic_compare_exchange_n(&inject_left[i], &left, left - 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return inject_errno[i];
    }
    return 0;
}

static void count_eintr(int i, long result)
{
    if (result < 0 && errno == EINTR)
        __atomic_add_fetch(&eintrs[i], 1, __ATOMIC_SEQ_CST);
}

/* The libc function this one wraps. */
#define REAL(i, function) \
    static __typeof__(function) *real; \
    if (!real) real = (__typeof__(function) *)dlsym(RTLD_NEXT, names[i])

#define FAULT(i, fd) do { \
        int err_ = take_fault(i, fd); \
        if (err_) { errno = err_; return -1; } \
    } while (0)

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    REAL(ACCEPT4, accept4);
    FAULT(ACCEPT4, fd);
    int r = real(fd, addr, len, flags);
    count_eintr(ACCEPT4, r);
    return r;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    REAL(ACCEPT, accept);
    FAULT(ACCEPT, fd);
    int r = real(fd, addr, len);
    count_eintr(ACCEPT, r);
    return r;
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    REAL(SEND, send);
    FAULT(SEND, fd);
    ssize_t r = real(fd, buf, n, flags);
    count_eintr(SEND, r);
    return r;
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags,
               const struct sockaddr *addr, socklen_t len)
{
    REAL(SENDTO, sendto);
    FAULT(SENDTO, fd);
    ssize_t r = real(fd, buf, n, flags, addr, len);
    count_eintr(SENDTO, r);
    return r;
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    REAL(RECV, recv);
    FAULT(RECV, fd);
    ssize_t r = real(fd, buf, n, flags);
    count_eintr(RECV, r);
    return r;
}

ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *len)
{
    REAL(RECVFROM, recvfrom);
    FAULT(RECVFROM, fd);
    ssize_t r = real(fd, buf, n, flags, addr, len);
    count_eintr(RECVFROM, r);
    return r;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    REAL(RECVMSG, recvmsg);
    FAULT(RECVMSG, fd);
    ssize_t r = real(fd, msg, flags);
    count_eintr(RECVMSG, r);
    return r;
}

int recvmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags, struct timespec *timeout)
{
    REAL(RECVMMSG, recvmmsg);
    FAULT(RECVMMSG, fd);
    int r = real(fd, msgs, n, flags, timeout);
    count_eintr(RECVMMSG, r);
    return r;
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    REAL(POLL, poll);
    int r = real(fds, n, timeout);
    __atomic_add_fetch(&calls[POLL], 1, __ATOMIC_SEQ_CST);
    count_eintr(POLL, r);
    return r;
}

int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout)
{
    REAL(EPOLL_WAIT, epoll_wait);
    int r = real(epfd, events, max, timeout);
    __atomic_add_fetch(&calls[EPOLL_WAIT], 1, __ATOMIC_SEQ_CST);
    count_eintr(EPOLL_WAIT, r);
    return r;
}
"""


@pytest.fixture(scope="session")
def fault_shim(tmp_path_factory):
    """The path of the built LD_PRELOAD library (skip without a compiler)."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        pytest.skip("fault injection needs Linux and a C compiler")
    directory = tmp_path_factory.mktemp("faultshim")
    source = directory / "faultshim.c"
    library = directory / "faultshim.so"
    source.write_text(FAULT_SHIM)
    build = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-Wall", "-o", str(library), str(source), "-ldl"],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    return str(library)


# ---------------------------------------------------------------------------
# The scenarios, run in one child per variant under the library
# ---------------------------------------------------------------------------

FAULTS_CHILD = variants.CHILD_IMPORT + textwrap.dedent(
    r'''
    import ctypes, errno, json, os, signal, socket, sys, threading, time
    from util import background_server, recv_until_eof, tcp_connect

    shim = ctypes.CDLL(os.environ["FAULT_SHIM"])
    shim.fault_calls.restype = shim.fault_eintrs.restype = ctypes.c_long
    shim.fault_inject.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_long, ctypes.c_int]
    UNTIL_CLEARED = -1

    # The libc calls behind one Python-level operation: which one a core
    # uses is its own business (recvmmsg() batches datagrams on Linux).
    SAME_OPERATION = {"accept": ("accept4", "accept"),
                      "recvfrom": ("recvfrom", "recvmsg", "recvmmsg")}

    def inject(call, err, count, fd):
        for each in SAME_OPERATION.get(call, (call,)):
            shim.fault_inject(each.encode(), err, count, fd)

    def calls(call):
        return sum(shim.fault_calls(each.encode()) for each in SAME_OPERATION.get(call, (call,)))

    def eintrs(call):
        return shim.fault_eintrs(call.encode())

    def result(name, **values):
        print("RESULT", name, json.dumps(values), flush=True)

    errors = []  # handle_error: "<exception name>:<errno name>"

    class Recording:
        def handle_error(self, request, client_address):
            exc = sys.exc_info()[1]
            code = getattr(exc, "errno", None)
            errors.append("%s:%s" % (type(exc).__name__, errno.errorcode.get(code, code)))

    class Echo(ss.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                if line.startswith(b"fault "):  # "fault <call> <errno> <count>"
                    _, call, err, count = line.split()
                    inject(call.decode(), getattr(errno, err.decode()), int(count),
                           self.connection.fileno())
                    self.wfile.write(b"z" * 200000 + b"\n")
                elif line == b"big\n":
                    self.wfile.write(BIG)
                else:
                    self.wfile.write(line)

    # Larger than what the kernel buffers between a sender and a receiver
    # with a small SO_RCVBUF (the sender's buffer grows to 4 MB): writing it
    # blocks in send() until the client reads.
    BIG = b"b" * (8 << 20) + b"\n"

    class TimedEcho(Echo):
        timeout = 5

    class DatagramEcho(ss.DatagramRequestHandler):
        def handle(self):
            if self.packet.startswith(b"fault "):
                _, call, err, count = self.packet.split()
                inject(call.decode(), getattr(errno, err.decode()), int(count),
                       self.socket.fileno())
            self.wfile.write(self.packet)

    def tcp_server(handler=Echo):
        return type("Server", (Recording, ss.TCPServer), {"request_queue_size": 64})(
            ("127.0.0.1", 0), handler)

    def ask(address, data):
        with tcp_connect(address) as c:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            return recv_until_eof(c)

    # -- accept()/recvfrom() out of a resource: back off, then recover ------
    def listener_fault(call, err_name, window):
        datagram = call == "recvfrom"
        if datagram:
            server = type("Server", (Recording, ss.UDPServer), {})(("127.0.0.1", 0), DatagramEcho)
        else:
            server = tcp_server()
        with background_server(server):
            inject(call, getattr(errno, err_name), UNTIL_CLEARED, server.fileno())
            clients = []
            for i in range(3):
                if datagram:
                    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    c.settimeout(10)
                    c.sendto(b"pending %d" % i, server.server_address)
                else:
                    c = tcp_connect(server.server_address)
                    c.sendall(b"pending %d\n" % i)
                    c.shutdown(socket.SHUT_WR)
                clients.append(c)
            time.sleep(0.05)  # the loop has seen them
            before = calls(call)
            time.sleep(window)
            tries = calls(call) - before
            inject(call, 0, 0, -1)
            replies = []
            for c in clients:
                replies.append((c.recv(100) if datagram else recv_until_eof(c)).decode())
                c.close()
            if datagram:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                    c.settimeout(10)
                    c.sendto(b"after", server.server_address)
                    after = c.recv(100).decode()
            else:
                after = ask(server.server_address, b"after\n").decode()
        result("listener-" + call + "-" + err_name, tries_per_second=tries / window,
               replies=replies, after=after, errors=errors[:])
        del errors[:]

    # -- send()/sendto() failing inside a handler ------------------------------
    def send_fault(handler, call, err_name, count):
        server = tcp_server(handler)
        with background_server(server):
            reply = ask(server.server_address, b"fault %s %s %d\n" % (
                call.encode(), err_name.encode(), count))
            inject(call, 0, 0, -1)  # the next connection may get the same fd
            after = ask(server.server_address, b"after\n").decode()
        result("send-%s-%s-%d-%s" % (call, err_name, count, handler.__name__),
               reply_bytes=len(reply), after=after, errors=errors[:])
        del errors[:]

    def sendto_fault(err_name):
        server = type("Server", (Recording, ss.UDPServer), {})(("127.0.0.1", 0), DatagramEcho)
        with background_server(server), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(10)
            c.sendto(b"fault sendto %s 1" % err_name.encode(), server.server_address)
            c.sendto(b"after", server.server_address)
            after = c.recv(100).decode()
        result("sendto-" + err_name, after=after, errors=errors[:])
        del errors[:]

    # -- SIGALRM every millisecond ---------------------------------------------
    def eintr_storm(handler, requests=30):
        """serve_forever() in the main thread (where signals are handled)
        while SIGALRM fires every 1 ms; the clients run in a thread that
        blocks SIGALRM, so every signal interrupts the server's calls."""
        alarms = [0]
        signal.signal(signal.SIGALRM, lambda *args: alarms.__setitem__(0, alarms[0] + 1))
        server = tcp_server(handler)
        replies = []

        def clients():
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
            try:
                for i in range(requests):
                    with socket.socket() as c:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
                        c.settimeout(10)
                        c.connect(server.server_address)
                        # The line in pieces: the handler's readline() blocks
                        # in recv() between them.
                        c.sendall(b"line ")
                        time.sleep(0.002)
                        c.sendall(b"%d\n" % i)
                        if i % 10 == 0:  # and a reply larger than the socket buffers
                            c.sendall(b"big\n")
                        c.shutdown(socket.SHUT_WR)
                        # Read late: the handler blocks writing meanwhile.
                        time.sleep(0.05 if i % 10 == 0 else 0.002)
                        replies.append(recv_until_eof(c))
            finally:
                server.shutdown()

        driver = threading.Thread(target=clients)
        before = {call: eintrs(call) for call in ("recv", "send", "poll", "epoll_wait", "accept4")}
        driver.start()
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
        try:
            server.serve_forever(poll_interval=0.1)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        driver.join(10)
        server.server_close()
        expected = [b"line %d\n" % i + (BIG if i % 10 == 0 else b"")
                    for i in range(requests)]
        result("eintr-" + handler.__name__, alarms=alarms[0],
               served=sum(got == want for got, want in zip(replies, expected)),
               requests=requests, stopped=not driver.is_alive(),
               eintrs={call: eintrs(call) - n for call, n in before.items()},
               errors=errors[:])
        del errors[:]

    for call, err_name in (("accept", "ENFILE"), ("accept", "ENOBUFS"), ("recvfrom", "ENOMEM")):
        listener_fault(call, err_name, window=0.2)
    for handler in (Echo, TimedEcho):
        send_fault(handler, "send", "EAGAIN", 3)
        send_fault(handler, "send", "ENOBUFS", 1)
    sendto_fault("ENOBUFS")
    sendto_fault("EAGAIN")
    eintr_storm(Echo)
    eintr_storm(TimedEcho)
    print("DONE", flush=True)
    '''
)

_fault_results = {}


def fault_results(variant, shim):
    """Every scenario's result for ``variant``: one child run, cached."""
    if variant not in _fault_results:
        env = variants.child_env(variant, extra_path=[TESTS_DIR])
        # After what is preloaded already: an ASan runtime must come first.
        env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), shim]))
        env["FAULT_SHIM"] = shim
        child = ChildProcess(FAULTS_CHILD, env)
        results = {}
        try:
            while True:
                line = child.lines.get(timeout=TIMEOUT * 3)
                if line.startswith("DONE"):
                    break
                word, name, values = line.split(None, 2)
                assert word == "RESULT", line
                results[name] = json.loads(values)
        except Exception as exc:
            raise AssertionError("fault child failed; stderr:\n" + "".join(child.stderr)) from exc
        finally:
            code = child.close()
        assert code == 0, "".join(child.stderr)
        _fault_results[variant] = results
    return _fault_results[variant]


#: A loop that retried a failing accept() at once would make tens of
#: thousands of tries per second; the back-off (5 ms doubling to 100 ms)
#: makes about ten in the first second.
MAX_TRIES_PER_SECOND = 100


@pytest.mark.parametrize("call, err_name", [
    ("accept", "ENFILE"), ("accept", "ENOBUFS"), ("recvfrom", "ENOMEM"),
])
def test_listener_out_of_resources_backs_off_and_recovers(ss, variant, fault_shim, call,
                                                         err_name, request):
    result = fault_results(variant, fault_shim)["listener-%s-%s" % (call, err_name)]
    datagram = call == "recvfrom"
    line = "pending %d" if datagram else "pending %d\n"
    assert result["replies"] == [line % i for i in range(3)]
    assert result["after"] == ("after" if datagram else "after\n")
    # The stdlib swallows get_request() errors without handle_error().
    assert result["errors"] == []
    if variant == "stdlib":
        request.applymarker(pytest.mark.xfail(
            reason="the stdlib retries a failing accept()/recvfrom() at once: it spins",
            strict=True))
    assert result["tries_per_second"] < MAX_TRIES_PER_SECOND, result


@pytest.mark.parametrize("handler", ["Echo", "TimedEcho"])
def test_send_eagain_and_enobufs_in_a_handler(ss, variant, fault_shim, handler):
    results = fault_results(variant, fault_shim)
    eagain = results["send-send-EAGAIN-3-" + handler]
    enobufs = results["send-send-ENOBUFS-1-" + handler]
    if handler == "Echo":
        # A blocking socket: sendall() raises BlockingIOError at once.
        assert eagain["errors"] == ["BlockingIOError:EAGAIN"]
        assert eagain["reply_bytes"] == 0
    else:
        # A socket with a timeout: EAGAIN means "wait for room", retried.
        assert eagain["errors"] == []
        assert eagain["reply_bytes"] == 200001
    assert enobufs["errors"] == ["OSError:ENOBUFS"]
    assert enobufs["reply_bytes"] == 0
    assert eagain["after"] == enobufs["after"] == "after\n"


@pytest.mark.parametrize("err_name, exception", [("ENOBUFS", "OSError"),
                                                 ("EAGAIN", "BlockingIOError")])
def test_sendto_failure_in_a_datagram_handler(ss, variant, fault_shim, err_name, exception):
    result = fault_results(variant, fault_shim)["sendto-" + err_name]
    assert result["errors"] == ["%s:%s" % (exception, err_name)]
    assert result["after"] == "after"


@pytest.mark.parametrize("handler", ["Echo", "TimedEcho"])
def test_eintr_storm(ss, variant, fault_shim, handler):
    """Every request is served whole and shutdown() works while SIGALRM
    fires every millisecond; the library's counters show that the signals
    did interrupt the calls the server blocks in."""
    result = fault_results(variant, fault_shim)["eintr-" + handler]
    assert result["stopped"]
    assert result["served"] == result["requests"], result
    assert result["errors"] == []
    assert result["alarms"] > 100, result
    interrupted = result["eintrs"]
    assert interrupted["epoll_wait"] + interrupted["poll"] > 0, result  # the loop's wait
    # The handlers' reads and writes: recv() and send() themselves without
    # a timeout; with one, poll() first.
    if handler == "Echo":
        assert interrupted["recv"] > 0 and interrupted["send"] > 0, result
    else:
        assert interrupted["poll"] > 0, result


# ---------------------------------------------------------------------------
# fork() from a handler and from the serving thread
# ---------------------------------------------------------------------------


def echo_handler(module):
    class Echo(module.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    return Echo


def ask(address, data=b"ping\n"):
    with tcp_connect(address) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        return recv_until_eof(client)


def exit_code(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def forking_handler(module, child_does):
    """A handler that forks; the child runs ``child_does(server)`` and
    always leaves with os._exit(); the parent waits for it, then answers
    with the child's exit code."""

    class ForkingHandler(module.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    child_does(self.server)
                    code = 0
                finally:
                    os._exit(code)
            self.wfile.write(b"child exited %d\n" % exit_code(pid))

    return ForkingHandler


def child_exits(server):
    pass


def child_closes_the_server(server):
    """The child closes its copies of the listener and of the waker.  (The
    base class's server_close: ThreadingMixIn's would also join the
    parent's handler threads, the current one among them, which raises
    in the stdlib as here.)"""
    fastserver.TCPServer.server_close(server)


def child_serves_and_stops(server):
    """A loop of its own in the child, on the same server object: it must
    get its own waker, and stopping it must not touch the parent's."""
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 60})
    loop.start()
    time.sleep(0.02)
    server.shutdown()
    loop.join(TIMEOUT)
    if loop.is_alive():
        raise AssertionError("the child's loop did not stop")


@pytest.mark.filterwarnings(FORK_WARNING_FILTER)
@pytest.mark.parametrize("flavour", ["TCPServer", "ThreadingTCPServer"])
@pytest.mark.parametrize("child_does", [child_exits, child_closes_the_server,
                                        child_serves_and_stops])
def test_fork_from_a_handler(fs, flavour, child_does):
    """Whatever the child does with its copy of the server, the parent's
    loop keeps serving, and its shutdown() still wakes it at once (with a
    60 s poll_interval, a stolen or closed waker would hang the test)."""
    fds_before = fd_count()
    server = getattr(fs, flavour)((HOST, 0), forking_handler(fs, child_does))
    loop = ThreadCall(server.serve_forever, poll_interval=60)
    try:
        for _ in range(3):
            assert ask(server.server_address) == b"child exited 0\n"
        waker = server._fastserver_engine.waker
        os.fstat(waker.fileno())  # still open in the parent
    finally:
        stopper = ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT) and loop.join(TIMEOUT), "shutdown() did not wake the loop"
        server.server_close()
    assert loop.exc is None
    assert reap_children() == []
    assert fd_count() == fds_before


@pytest.mark.filterwarnings(FORK_WARNING_FILTER)
def test_fork_from_the_serving_thread(fs):
    """The thread that ran serve_forever() forks between two loops.  The
    child serves the same server object with a loop of its own (its own
    poller and waker) and stops it with its own shutdown(); then the
    parent serves again and stops at once: nothing of its loop was shared,
    stolen or closed by the child."""
    server = fs.TCPServer((HOST, 0), pid_handler(fs))
    outcome = {}

    def serve_then_fork():
        server.serve_forever(poll_interval=0.05)
        pid = os.fork()
        if pid == 0:  # the child: one loop, stopped by a thread of its own
            code = 1
            try:
                stopper = threading.Thread(target=lambda: (time.sleep(0.3), server.shutdown()))
                stopper.start()
                server.serve_forever(poll_interval=60)
                stopper.join(TIMEOUT)
                code = 0
            finally:
                os._exit(code)
        outcome["pid"] = pid
        outcome["child"] = exit_code_within(pid, TIMEOUT)
        server.serve_forever(poll_interval=60)

    thread = ThreadCall(serve_then_fork)
    try:
        assert ask(server.server_address, b"pid\n") == b"%d\n" % os.getpid()
        server.shutdown()  # ends the first loop: the thread forks
        assert wait_until(lambda: "child" in outcome), "the child's loop did not stop"
        assert outcome["child"] == 0
        assert ask(server.server_address, b"pid\n") == b"%d\n" % os.getpid()
        stopper = ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT) and thread.join(TIMEOUT), "the parent's shutdown() hung"
    finally:
        server.server_close()
    assert thread.exc is None


@pytest.mark.filterwarnings(FORK_WARNING_FILTER)
def test_two_processes_serve_one_blocking_listener(fs, variant, request):
    """Prefork by hand: after bind, the serving thread forks and parent and
    child both serve the listening socket.  When one process's loop ends,
    the other must still serve and stop at once."""
    # The compiled core: a loop that ends restores the listener's blocking
    # mode on the shared file description; the other process's loop takes
    # O_NONBLOCK back at its next wake-up, before it accepts.
    if not variant.startswith("c-"):
        request.applymarker(pytest.mark.xfail(strict=False, reason=(
            "twin (as the stdlib): both loops wake for each connection and the loser "
            "blocks in accept() on the blocking listener until the next connection, "
            "so its shutdown() may hang")))
    server = fs.TCPServer((HOST, 0), pid_handler(fs))
    with serving_in_parent_and_child(server) as (thread, forked, stop_child):
        assert ask(server.server_address, b"pid\n") == b"%d\n" % os.getpid()
        server.shutdown()  # ends the first loop: the thread forks
        assert wait_until(lambda: "pid" in forked)
        pids = set()
        deadline = time.monotonic() + TIMEOUT
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(int(ask(server.server_address, b"pid\n")))
        assert pids == {os.getpid(), forked["pid"]}, "both processes serve"
        stopper = ThreadCall(server.shutdown)  # the parent's loop only
        assert stopper.join(1.0) and thread.join(TIMEOUT), "the parent's shutdown() hung"
        # The child still serves, alone now, and stops at once when told.
        assert int(ask(server.server_address, b"pid\n")) == forked["pid"]
        assert stop_child() == 0, "the child's shutdown() hung"


@pytest.mark.filterwarnings(FORK_WARNING_FILTER)
def test_shared_listener_loop_ends_while_the_other_is_in_a_handler(fs, variant, request):
    """As above, but the parent's loop ends while the child is inside a
    slow request: the child's loop must not then block on the listener
    (in accept()) where its shutdown() cannot reach it.  The compiled core
    takes O_NONBLOCK back before each accept(), not once per wake-up."""
    if not variant.startswith("c-"):
        request.applymarker(pytest.mark.xfail(strict=False, reason=(
            "twin (as the stdlib): both loops wake for the slow client's connection and "
            "the loser blocks in accept() on the blocking listener")))
    server = fs.TCPServer((HOST, 0), slow_in_child_handler(fs, os.getpid()))
    with serving_in_parent_and_child(server) as (thread, forked, stop_child):
        assert ask(server.server_address, b"pid\n") == b"%d\n" % os.getpid()
        server.shutdown()  # ends the first loop: the thread forks
        assert wait_until(lambda: "pid" in forked)
        # Until the child takes one: its handler then sleeps 0.5 s.
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with tcp_connect(server.server_address) as slow_client:
                slow_client.sendall(b"slow\n")
                slow_client.shutdown(socket.SHUT_WR)
                if recv_until_eof(slow_client) == b"child sleeps\n":
                    break
        else:
            pytest.fail("the child never took a request")
        stopper = ThreadCall(server.shutdown)  # the parent's loop ends meanwhile
        assert stopper.join(1.0) and thread.join(TIMEOUT), "the parent's shutdown() hung"
        time.sleep(0.6)  # the child's request is over; its loop goes on
        assert stop_child() == 0, "the child's shutdown() hung"


@contextlib.contextmanager
def serving_in_parent_and_child(server):
    """Prefork by hand: a thread serves ``server`` until the caller's first
    shutdown(), then forks, and parent and child both serve the listener.

    Yields ``(thread, forked, stop_child)``: the serving thread (a
    ThreadCall), ``forked["pid"]`` once the child exists, and
    ``stop_child()``, which makes the child call shutdown() and returns its
    exit code (0 once its loop ended; None if it had to be killed).  On the
    way out every process is stopped and reaped, and a parent's loop left
    blocked in accept() is released.
    """
    stop_child_r, stop_child_w = os.pipe()
    forked = {}

    def serve_then_fork():
        server.serve_forever(poll_interval=0.05)  # a first loop, stopped by the caller
        pid = os.fork()
        if pid == 0:  # the child: serve until the parent says stop
            code = 1
            try:
                os.close(stop_child_w)  # EOF when the parent closes its end
                threading.Thread(target=lambda: (os.read(stop_child_r, 1), server.shutdown()),
                                 daemon=True).start()
                server.serve_forever(poll_interval=60)
                code = 0
            finally:
                os._exit(code)
        forked["pid"] = pid
        server.serve_forever(poll_interval=60)

    def stop_child():
        os.write(stop_child_w, b"x")
        return exit_code_within(forked.pop("pid"), 1.0)  # reaped now

    thread = ThreadCall(serve_then_fork)
    try:
        yield thread, forked, stop_child
    finally:
        os.close(stop_child_w)
        if "pid" in forked:
            exit_code_within(forked["pid"], 0.5)  # reaped, killed if need be
        while thread.thread.is_alive():  # a loop blocked in accept(): release it
            server._BaseServer__shutdown_request = True
            try:
                socket.create_connection(server.server_address, timeout=1).close()
            except OSError:
                pass
            thread.join(0.2)
        os.close(stop_child_r)
        server.server_close()


def slow_in_child_handler(module, parent_pid):
    """Answers ``pid``; for ``slow`` the parent answers ``parent`` at once
    and a child answers ``child sleeps`` and then takes 0.5 s to finish."""

    class Handler(module.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            if line == b"pid\n":
                self.wfile.write(b"%d\n" % os.getpid())
            elif os.getpid() == parent_pid:
                self.wfile.write(b"parent\n")
            else:
                self.wfile.write(b"child sleeps\n")
                self.connection.shutdown(socket.SHUT_WR)
                time.sleep(0.5)

    return Handler


def exit_code_within(pid, seconds):
    """The exit code of child ``pid``; None if it had to be killed after
    ``seconds`` (it is reaped either way)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def pid_handler(module):
    class Pid(module.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            self.wfile.write(b"%d\n" % os.getpid())

    return Pid


# ---------------------------------------------------------------------------
# shutdown() and server_close() at awkward moments
# ---------------------------------------------------------------------------


def test_shutdown_from_many_threads_at_once(ss):
    server = ss.TCPServer((HOST, 0), echo_handler(ss))
    loop = ThreadCall(server.serve_forever, poll_interval=0.05)
    assert ask(server.server_address) == b"ping\n"
    start = threading.Barrier(8)
    stoppers = [ThreadCall(lambda: (start.wait(), server.shutdown())) for _ in range(8)]
    assert all(stopper.join(TIMEOUT) for stopper in stoppers)
    assert all(stopper.exc is None for stopper in stoppers)
    assert loop.join(TIMEOUT) and loop.exc is None
    server.server_close()


def test_shutdown_before_serve_forever(ss):
    """The stdlib's documented behaviour: shutdown() blocks until a loop has
    run; serve_forever() then sees the request and returns at once."""
    server = ss.TCPServer((HOST, 0), echo_handler(ss))
    try:
        stopper = ThreadCall(server.shutdown)
        assert not stopper.join(0.2), "shutdown() returned with no loop to stop"
        loop = ThreadCall(server.serve_forever, poll_interval=0.05)
        assert loop.join(TIMEOUT) and stopper.join(TIMEOUT)
        # The request was consumed: the next loop serves normally.
        assert_one_loop_serves(server)
    finally:
        server.server_close()


def test_shutdown_after_serve_forever(ss):
    """After the loop ended, shutdown() returns at once, and -- a quirk the
    stdlib has, copied -- leaves its request set, so the next
    serve_forever() returns at once; the one after serves."""
    server = ss.TCPServer((HOST, 0), echo_handler(ss))
    try:
        assert_one_loop_serves(server)
        assert ThreadCall(server.shutdown).join(TIMEOUT), "shutdown() after the loop blocked"
        assert ThreadCall(server.serve_forever, poll_interval=0.05).join(TIMEOUT)
        assert_one_loop_serves(server)
    finally:
        server.server_close()


def assert_one_loop_serves(server):
    """A serve_forever() in a thread answers a ping and ends on shutdown()."""
    loop = ThreadCall(server.serve_forever, poll_interval=0.05)
    assert ask(server.server_address) == b"ping\n"
    server.shutdown()
    assert loop.join(TIMEOUT)


@pytest.mark.parametrize("cls", ["TCPServer", "ThreadingTCPServer", "UDPServer"])
def test_server_close_while_serving(fs, cls):
    """server_close() from another thread while the loop waits: the loop
    stops polling the dead listener (no spinning), shutdown() still
    returns at once, and every fd is given back."""
    fds_before = fd_count()
    if cls == "UDPServer":
        class Echo(fs.DatagramRequestHandler):
            def handle(self):
                self.wfile.write(self.packet)
    else:
        Echo = echo_handler(fs)
    server = getattr(fs, cls)((HOST, 0), Echo)
    native_id = []
    loop = ThreadCall(lambda: (native_id.append(threading.get_native_id()),
                               server.serve_forever(poll_interval=0.05)))
    if cls == "UDPServer":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(TIMEOUT)
            client.sendto(b"ping", server.server_address)
            assert client.recv(100) == b"ping"
    else:
        assert ask(server.server_address) == b"ping\n"
    server.server_close()
    cpu_before = thread_cpu_seconds(native_id[0])
    time.sleep(0.5)
    cpu = thread_cpu_seconds(native_id[0]) - cpu_before
    assert cpu < 0.25, "the loop used %.2f s of CPU in 0.5 s after server_close()" % cpu
    stopper = ThreadCall(server.shutdown)
    assert stopper.join(TIMEOUT) and loop.join(TIMEOUT)
    assert loop.exc is None
    assert fd_count() == fds_before


def test_closed_listener_fd_reused_while_serving(fs):
    """After server_close() while the loop runs, the listener's fd number
    is free: a new, unrelated listening socket may get it.  The old loop
    must not accept that socket's connections."""
    served = []

    class Record(fs.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            served.append(self.client_address)

    server = fs.TCPServer((HOST, 0), Record)
    loop = ThreadCall(server.serve_forever, poll_interval=0.05)
    listen_fd = server.fileno()
    assert ask(server.server_address) == b""
    server.server_close()
    time.sleep(0.1)  # the loop has noticed, or is waiting on a dead fd
    other = socket.create_server((HOST, 0))
    try:
        if other.fileno() != listen_fd:  # give it the old number
            os.dup2(other.fileno(), listen_fd)
            other.close()
            other = socket.socket(fileno=listen_fd)
        other.settimeout(TIMEOUT)
        with tcp_connect(other.getsockname()) as client:
            client.sendall(b"for the new owner\n")
            time.sleep(0.3)  # time for a confused loop to take it
            conn, _ = other.accept()
            conn.close()
    except socket.timeout:
        pytest.fail("the old serve loop accepted a connection of a socket it does not own")
    finally:
        stopper = ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT) and loop.join(TIMEOUT)
        other.close()
    assert len(served) == 1
