"""A race battery, meant for free-threaded Python (3.13t with the GIL off).

fastserver declares its compiled core free-threading compatible, so what
the core and the Python layers share between threads is hit here from many
threads at once, on real loopback sockets.  On a GIL build these are
ordinary concurrency tests, and they must pass there too.  Each case runs
on the compiled core (epoll and poll) and on the pure-Python twin (fixture
``fs``), and on the stdlib as well (fixture ``ss``) where the behaviour is
the stdlib's.

A race shows only now and then, so each case repeats its scenario, on a
fresh server each time (the counts are per variant and parameter):

- many threads stopping one serving server: CHAOS_ROUNDS (20) rounds of
  10 calls released at once (and, once, where a handle_request() that
  loses to server_close() ends up);
- concurrent drain() callers are all woken: DRAIN_ROUNDS (5) rounds;
- max_connections ("wait", "refuse") on a ThreadingTCPServer under 64
  clients at once: LIMIT_ROUNDS (6) rounds of 64 connections;
- ThreadPoolTCPServer overload ("wait", "refuse") under 64 clients at
  once: POOL_ROUNDS (6) rounds of 64 connections;
- two threads sharing one rfile, two sharing one wfile: SHARED_ROUNDS (10)
  rounds each (the shared rfile is expected to fail where it is an
  io.BufferedReader, the stdlib's and the twin's: BUFFERED_READER_RACE);
- os.fork() from handlers and from another thread while others serve:
  FORK_ROUNDS (4) rounds of 3 + 3 forks.

Every thread and process a test starts is joined (or reaped, by pid)
within a bound, so a hang fails the test instead of stalling the suite,
and every round checks that the process has its fds and threads back.
"""
import gc
import os
import re
import signal
import socket
import sys
import threading
import time

import pytest

from fastserver import _engine

from util import HOST, TIMEOUT, ThreadCall, open_fds, recv_until_eof, wait_until

pytestmark = pytest.mark.timeout(120)

CHAOS_ROUNDS = 20
DRAIN_ROUNDS = 5
LIMIT_ROUNDS = 6
POOL_ROUNDS = 6
SHARED_ROUNDS = 10
FORK_ROUNDS = 4

#: How long the threads a round started may take to finish, all together.
JOIN_BOUND = TIMEOUT
#: A client's socket timeout: a server that stops answering fails the
#: client after this long instead of hanging it.
CLIENT_TIMEOUT = 5.0


def is_stdlib(module):
    return module.__name__ == "socketserver"


class Resources:
    """The process's fd and thread counts at the start of a round; ``check()``
    waits (bounded) for both to come back: a handler thread may still be on
    its way out, and a dropped socket closes when it is collected."""

    def __init__(self):
        self.fds = open_fds()
        self.threads = threading.active_count()

    def check(self):
        assert wait_until(lambda: threading.active_count() <= self.threads,
                          timeout=JOIN_BOUND), [t.name for t in threading.enumerate()]

        def fds_back():
            gc.collect()
            return open_fds() == self.fds

        assert wait_until(fds_back, timeout=JOIN_BOUND), (self.fds, open_fds())


def join_all(calls, bound=JOIN_BOUND):
    """Join ThreadCalls within one overall bound; the names of those still
    running."""
    deadline = time.monotonic() + bound
    return [call.thread.name for call in calls
            if not call.join(max(0.0, deadline - time.monotonic()))]


def at_barrier(barrier, name, func):
    """A ThreadCall (its thread named ``name``) that calls ``func()`` once
    every thread of ``barrier`` is there, so that the calls start together."""
    def run():
        barrier.wait(JOIN_BOUND)
        return func()

    run.__name__ = name
    return ThreadCall(run)


def start_loop(server):
    loop = threading.Thread(target=server.serve_forever, name="serve_forever",
                            kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    return loop


def stop_loop(server, loop):
    """shutdown() and join the loop, bounded; then server_close()."""
    stopper = ThreadCall(server.shutdown)
    try:
        assert stopper.join(JOIN_BOUND), "shutdown() did not return"
        loop.join(JOIN_BOUND)
        assert not loop.is_alive(), "serve_forever() did not return"
    finally:
        server.server_close()


def recv_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def echo_once(address, line=b"ping\n"):
    """Send ``line`` on a new connection; the first line of the answer."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(line)
        return recv_line(sock)


def chatter(address, stop, bad_replies):
    """A client that connects, sends a line and reads its echo, again and
    again until ``stop``.  Refused, reset or cut is fine (the server is
    being stopped under it); an answer that is not the line sent is not."""
    while not stop.is_set():
        try:
            reply = echo_once(address)
        except OSError:
            time.sleep(0.001)
            continue
        if reply not in (b"ping\n", b""):
            bad_replies.append(reply)


def echo_handler(module):
    class Echo(module.StreamRequestHandler):
        timeout = CLIENT_TIMEOUT  # a connection left open ends its thread

        def handle(self):
            for line in self.rfile:
                if line == b"fork\n":  # test_fork_while_other_threads_serve
                    line = b"forked %s\n" % str(self.server.fork()).encode()
                self.wfile.write(line)

    return Echo


def server_class(module, kind, errors, **attributes):
    """A ThreadingTCPServer ("threading") or ThreadPoolTCPServer ("pool")
    whose handle_error() keeps the exception in ``errors``."""
    if kind == "threading":
        base = module.ThreadingTCPServer
    elif is_stdlib(module):
        pytest.skip("the stdlib has no thread pool")
    else:
        base = module.ThreadPoolTCPServer

    def handle_error(self, request, client_address):
        errors.append(sys.exc_info()[1])

    namespace = {"request_queue_size": 128, "handle_error": handle_error}
    namespace.update(attributes)
    return type("Recording" + base.__name__, (base,), namespace)


# ---------------------------------------------------------------------------
# Many threads stopping one serving server at once
# ---------------------------------------------------------------------------

def stopper_calls(module, server):
    """(name, callable) for each stopper thread: 10 calls."""
    calls = [
        ("shutdown", server.shutdown),
        ("shutdown", server.shutdown),
        ("server_close", server.server_close),
        ("server_close", server.server_close),
        ("handle_request", server.handle_request),
        ("handle_request", server.handle_request),
    ]
    if is_stdlib(module):  # no shutdown(timeout) nor drain() there
        return calls + [("handle_request", server.handle_request)] * 4
    return calls + [
        ("shutdown(timeout)", lambda: server.shutdown(timeout=0.05)),
        ("shutdown(timeout)", lambda: server.shutdown(timeout=0.05)),
        ("drain", lambda: server.drain(0.05)),
        ("drain", lambda: server.drain(0.05)),
    ]


def documented(name, kind, exc):
    """Is ``exc``, raised by the stopper ``name``, one that the stdlib's own
    code raises there (and so fastserver's, which keeps it)?

    - handle_request() on a server another thread has just closed waits
      on fd -1, which the stdlib's selector refuses with ValueError (so do
      fastserver's cores: test_handle_request_on_a_server_another_thread_closed);
    - ThreadingMixIn.process_request() lists a handler's thread before it
      starts it (the stdlib's order, kept line for line in mixins.py), so a
      server_close() in another thread while the loop still serves can join
      a thread that has not started: RuntimeError.  The pool lists and
      starts its workers under its lock, so it never does.
    """
    if name == "handle_request":
        return isinstance(exc, ValueError)
    if name == "server_close" and kind == "threading":
        return isinstance(exc, RuntimeError) and "before it is started" in str(exc)
    return False


def chaos_round(module, kind):
    resources, errors, bad_replies = Resources(), [], []
    pool_limits = {"max_workers": 4, "max_queue": 4} if kind == "pool" else {}
    cls = server_class(module, kind, errors, **pool_limits)
    server = cls((HOST, 0), echo_handler(module))
    # handle_request() honours self.timeout and the listener's own timeout
    # (the stdlib's documented escape): without them, a handle_request()
    # whose connection another thread accepted first would wait in accept()
    # for the next client, and one waiting on the listener when another
    # thread closes it would wait for ever (poll(2) does not return then).
    server.timeout = 0.05
    server.socket.settimeout(0.05)
    loop = start_loop(server)
    stop = threading.Event()
    clients = []
    try:
        assert echo_once(server.server_address) == b"ping\n"  # the loop serves
        clients = [ThreadCall(chatter, server.server_address, stop, bad_replies)
                   for _ in range(4)]
        calls = stopper_calls(module, server)
        barrier = threading.Barrier(len(calls))
        stoppers = [(name, at_barrier(barrier, name, call)) for name, call in calls]
        stuck = join_all([call for _, call in stoppers])
        assert not stuck, "still running after %.0f s: %s" % (JOIN_BOUND, stuck)
        loop.join(JOIN_BOUND)
        assert not loop.is_alive(), "serve_forever() went on after shutdown()"
    finally:
        stop.set()
        hung = join_all(clients)
        server.server_close()  # the round's own (it is idempotent)
    assert not hung, "clients hung: %s" % hung
    for name, call in stoppers:
        if call.exc is not None and not documented(name, kind, call.exc):
            raise AssertionError("%s raised %r" % (name, call.exc)) from call.exc
    assert not bad_replies, bad_replies
    # The clients are cut, reset or refused mid-request: socket errors in
    # the handlers are expected, anything else is not.
    assert all(isinstance(exc, OSError) for exc in errors), errors
    resources.check()


@pytest.mark.parametrize("kind", ["threading", "pool"])
def test_many_threads_stop_one_serving_server(ss, kind):
    """CHAOS_ROUNDS (20) rounds, each on a fresh server that 4 clients keep
    busy: 10 threads released at once call shutdown() (x2), server_close()
    (x2), handle_request() (x2) and, on fastserver, shutdown(timeout=0.05)
    (x2) and drain(0.05) (x2) (the stdlib, which has neither, gets 4 more
    handle_request()).  No call raises but as documented() allows, every
    call returns within JOIN_BOUND, the loop stops, every answer a client
    got is its own line, and the process has its fds and threads back."""
    for _ in range(CHAOS_ROUNDS):
        chaos_round(ss, kind)


def test_handle_request_on_a_server_another_thread_closed(ss):
    """Where a handle_request() that loses the race to server_close() ends
    up: on a closed server (fileno() -1) it raises ValueError at once, as
    the stdlib's does, instead of waiting on fd -1 for ever (poll(2)
    ignores a negative fd).  Deterministic; a bounded thread, as it used to
    hang."""
    server = ss.TCPServer((HOST, 0), ss.BaseRequestHandler)
    server.server_close()
    call = ThreadCall(server.handle_request)
    assert call.join(5.0), "handle_request() on a closed server waits for ever"
    assert isinstance(call.exc, ValueError), call.exc


def drain_round(fs):
    release = threading.Event()

    class Holder(fs.BaseRequestHandler):
        def handle(self):
            release.wait(JOIN_BOUND)

    server = fs.ThreadingTCPServer((HOST, 0), Holder)
    loop = start_loop(server)
    try:
        with socket.create_connection(server.server_address, timeout=CLIENT_TIMEOUT):
            registry = _engine.connections_of(server)
            assert wait_until(lambda: len(registry) == 1)
            waiters = [ThreadCall(server.drain, None) for _ in range(3)]
            waiters += [ThreadCall(server.shutdown, timeout=60) for _ in range(2)]
            time.sleep(0.1)  # they all wait by now (one that does not returns at once)
            release.set()
            stuck = join_all(waiters, bound=5.0)
        assert not stuck, "still waiting 5 s after the last connection closed: %s" % stuck
        assert [waiter.exc for waiter in waiters] == [None] * 5
        assert [waiter.result for waiter in waiters[:3]] == [0, 0, 0]  # nothing was cut
    finally:
        release.set()
        stop_loop(server, loop)


def test_concurrent_drains_all_return(fs):
    """DRAIN_ROUNDS (5) rounds: three drain(None) and two
    shutdown(timeout=60) calls wait together for the one open connection;
    once it closes every one of them returns, at once (not at its deadline,
    or never).  Not only a race: each waiter must be woken."""
    for _ in range(DRAIN_ROUNDS):
        drain_round(fs)


# ---------------------------------------------------------------------------
# 64 clients at once against max_connections and the thread pool
# ---------------------------------------------------------------------------

CLIENT_THREADS = 8
CONNECTIONS_PER_CLIENT = 8  # 64 connections at once


def burst(address, results, index):
    """Open CONNECTIONS_PER_CLIENT connections, send a line on each, then
    read each to EOF: ("served", line) when it echoes the line, ("refused",
    line) when it closes or resets without a word."""
    socks = []
    try:
        for n in range(CONNECTIONS_PER_CLIENT):
            sock = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
            socks.append(sock)
            try:
                sock.sendall(b"%d.%d\n" % (index, n))
            except (ConnectionResetError, BrokenPipeError):
                pass  # refused before we wrote: the read below says so
        for n, sock in enumerate(socks):
            line = b"%d.%d\n" % (index, n)
            try:
                reply = recv_until_eof(sock)
            except ConnectionResetError:  # closed with our line unread
                reply = b""
            if reply == line:
                results.append(("served", line))
            elif reply == b"":
                results.append(("refused", line))
            else:
                results.append(("garbled", reply))
    finally:
        for sock in socks:
            sock.close()


def run_bursts(address, overload):
    """CLIENT_THREADS bursts at once; every client must be served ("wait"),
    or served or refused cleanly ("refuse")."""
    results = []
    clients = [ThreadCall(burst, address, results, i) for i in range(CLIENT_THREADS)]
    stuck = join_all(clients)
    assert not stuck, "clients still waiting: %s" % stuck
    errors = [client.exc for client in clients if client.exc is not None]
    assert not errors, errors
    outcomes = [outcome for outcome, _ in results]
    assert len(outcomes) == CLIENT_THREADS * CONNECTIONS_PER_CLIENT
    assert "garbled" not in outcomes, results
    if overload == "wait":
        assert outcomes.count("served") == len(outcomes), outcomes.count("refused")
    assert "served" in outcomes


class Gauge:
    """How many handlers run at once, and the most seen, from many threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = self.peak = self.peak_registry = 0

    def __enter__(self):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc_info):
        with self.lock:
            self.running -= 1

    def saw_registry(self, count):
        with self.lock:
            self.peak_registry = max(self.peak_registry, count)


LIMIT = 16


def limit_round(fs, overload):
    resources, errors, gauge = Resources(), [], Gauge()

    class Holding(fs.StreamRequestHandler):
        timeout = CLIENT_TIMEOUT

        def handle(self):
            with gauge:
                registry = _engine.connections_of(self.server)
                gauge.saw_registry(len(registry))
                line = self.rfile.readline()
                time.sleep(0.002)  # hold the slot: the others pile up at the limit
                gauge.saw_registry(len(registry))
                self.wfile.write(line)

    cls = server_class(fs, "threading", errors, max_connections=LIMIT, overload=overload)
    server = cls((HOST, 0), Holding)
    loop = start_loop(server)
    try:
        run_bursts(server.server_address, overload)
    finally:
        stop_loop(server, loop)
    assert gauge.peak <= LIMIT, "%d handlers ran at once" % gauge.peak
    # "refuse" accepts a connection to refuse it: the registry counts it
    # from the accept until the loop sees the limit and lets it go (before
    # handle_overload()), so a handler may see one more than the limit for
    # that moment; no more, and never one that is served.
    refusing = 1 if overload == "refuse" else 0
    assert gauge.peak_registry <= LIMIT + refusing, (
        "the registry held %d" % gauge.peak_registry)
    assert not errors, errors
    registry = _engine.connections_of(server)
    assert len(registry) == 0 and not registry.waiting_for_room
    resources.check()


@pytest.mark.parametrize("overload", ["wait", "refuse"])
def test_max_connections_under_64_clients(fs, overload):
    """LIMIT_ROUNDS (6) rounds: 64 clients at once (8 threads x 8
    connections) against a ThreadingTCPServer with max_connections=16.
    From inside the handlers the registry (connections_of) never holds
    more than 16 (17 with "refuse", for the moment a connection being
    refused is in it), and no more than 16 handlers run at once; every client
    is served ("wait"), or served or refused cleanly ("refuse"); the
    registry is empty afterwards, and the fds are back."""
    for _ in range(LIMIT_ROUNDS):
        limit_round(fs, overload)


def status_problems(status):
    """What is inconsistent in one ThreadPoolStatus snapshot."""
    problems = []
    workers, idle, queued, in_flight, max_workers, max_queue = status
    if min(workers, idle, queued, in_flight) < 0:
        problems.append("negative")
    if in_flight > max_workers + max_queue:
        problems.append("in_flight above max_workers + max_queue")
    if workers > max_workers or queued > max_queue or idle > workers:
        problems.append("above a limit")
    # The requests running (in flight and not queued) are the busy workers.
    if in_flight - queued != workers - idle:
        problems.append("running != busy workers")
    return ["%s: %r" % (problem, status) for problem in problems]


def pool_round(fs, overload):
    resources, errors, problems = Resources(), [], []

    class Checking(fs.StreamRequestHandler):
        timeout = CLIENT_TIMEOUT

        def handle(self):
            problems.extend(status_problems(self.server.pool_status()))
            line = self.rfile.readline()
            time.sleep(0.001)
            problems.extend(status_problems(self.server.pool_status()))
            self.wfile.write(line)

    cls = server_class(fs, "pool", errors, max_workers=4, max_queue=4, overload=overload)
    server = cls((HOST, 0), Checking)
    done = threading.Event()

    def sample():
        while not done.is_set():
            problems.extend(status_problems(server.pool_status()))

    sampler = ThreadCall(sample)
    loop = start_loop(server)
    try:
        run_bursts(server.server_address, overload)
    finally:
        done.set()
        stop_loop(server, loop)
        assert sampler.join(JOIN_BOUND), "the sampler hung"
    assert sampler.exc is None, sampler.exc
    assert not problems, problems[:10]
    assert not errors, errors
    final = server.pool_status()
    assert (final.workers, final.idle, final.queued, final.in_flight) == (0, 0, 0, 0), final
    resources.check()


@pytest.mark.parametrize("overload", ["wait", "refuse"])
def test_pool_overload_under_64_clients(fs, overload):
    """POOL_ROUNDS (6) rounds: 64 clients at once (8 threads x 8
    connections) against a ThreadPoolTCPServer with max_workers=4 and
    max_queue=4.  Every pool_status() snapshot, taken in the handlers and
    by a thread that samples it all along, is consistent (nothing negative,
    in_flight <= max_workers + max_queue, the requests running are the
    busy workers); every client is served ("wait"), or served or refused
    cleanly ("refuse"); the pool is empty afterwards, and the fds are back."""
    for _ in range(POOL_ROUNDS):
        pool_round(fs, overload)


# ---------------------------------------------------------------------------
# Two threads sharing one rfile, two sharing one wfile
# ---------------------------------------------------------------------------

LINES = 400
MESSAGES = 60  # per writer
#: Every BIG_EVERY-th message of a writer is BIG bytes long on fastserver:
#: far more than one send() takes, so a write that is not whole would
#: show.  The stdlib's wfile is a sendall() with no lock (there, large
#: writes from two threads interleave), so it gets small ones only, which
#: the kernel takes in one send() each.
BIG_EVERY = 10
BIG = 200_000
MESSAGE = re.compile(rb"<(w[01])-(\d+):(x*)>")

#: Where the rfile is an io.BufferedReader (the stdlib's; the twin's
#: LineLimitedReader), two threads cannot share it for readline().
BUFFERED_READER_RACE = (
    "io.BufferedReader.readline() measures its buffer before taking its lock and "
    "uses that measure once it has it (CPython, Modules/_io/bufferedio.c, "
    "_buffered_readline): two threads reading lines at once can get a line split "
    "between them, or lose or repeat one, with the GIL too; only the compiled "
    "core's SocketReader holds its lock across the whole readline()"
)


def message(writer, n, big):
    size = BIG if big and n % BIG_EVERY == 0 else 20 + n % 40
    return b"<%s-%d:%s>" % (writer, n, b"x" * size)


def in_threads(*funcs):
    """Run each func in a thread of its own, all at once; fail on a hang or
    an exception."""
    calls = [ThreadCall(func) for func in funcs]
    stuck = join_all(calls)
    assert not stuck, "threads sharing a file hung: %s" % stuck
    errors = [call.exc for call in calls if call.exc is not None]
    assert not errors, errors


def serve_one_sharing_handler(module, share, send):
    """Serve one connection with a handler whose handle() returns
    ``share(handler)``, while the client runs ``send(sock)`` in a thread and
    reads to EOF.  Returns (what share returned, the bytes received)."""
    resources, outcome = Resources(), {}

    class Sharing(module.StreamRequestHandler):
        timeout = TIMEOUT

        def handle(self):
            outcome["shared"] = share(self)

    server = module.TCPServer((HOST, 0), Sharing)
    loop = start_loop(server)
    try:
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as sock:
            sender = ThreadCall(send, sock)
            received = recv_until_eof(sock)  # until the handler returns
            assert sender.join(JOIN_BOUND), "the client could not send"
            assert sender.exc is None, sender.exc
    finally:
        stop_loop(server, loop)
    assert "shared" in outcome, "the handler failed"
    resources.check()
    return outcome["shared"], received


def read_lines_in_two_threads(handler):
    read = ([], [])
    in_threads(*(lambda mine=mine: mine.extend(handler.rfile) for mine in read))
    return read


def test_two_threads_share_one_rfile(ss, variant, request):
    """SHARED_ROUNDS (10) rounds: in one StreamRequestHandler two threads
    iterate over the same rfile while the client sends 400 lines, then
    half-closes.  Every line comes out exactly once, whole, across the two
    threads, and each thread gets its lines in the order sent."""
    if is_stdlib(ss) or variant == "py":
        request.applymarker(pytest.mark.xfail(reason=BUFFERED_READER_RACE, strict=False))
    sent = [b"line %d %s\n" % (i, b"y" * (i % 97)) for i in range(LINES)]
    order = {line: i for i, line in enumerate(sent)}

    def send(sock):
        sock.sendall(b"".join(sent))
        sock.shutdown(socket.SHUT_WR)  # the readers' EOF

    for _ in range(SHARED_ROUNDS):
        (first, second), _ = serve_one_sharing_handler(ss, read_lines_in_two_threads, send)
        assert sorted(first + second) == sorted(sent)
        for mine in (first, second):
            assert mine == sorted(mine, key=order.__getitem__)


def test_two_threads_share_one_wfile(ss):
    """SHARED_ROUNDS (10) rounds: in one StreamRequestHandler two threads
    write 60 messages each to the same wfile at once (on fastserver every
    tenth is 200 kB).  The client gets every message whole, each thread's
    in the order written, and nothing else."""
    big = not is_stdlib(ss)

    def write_in_two_threads(handler):
        # A small send buffer: a large write then takes several send()s
        # (the kernel would otherwise grow the buffer and take it in one).
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)

        def writer(name):
            return lambda: [handler.wfile.write(message(name, n, big)) for n in range(MESSAGES)]

        in_threads(writer(b"w0"), writer(b"w1"))

    for _ in range(SHARED_ROUNDS):
        _, received = serve_one_sharing_handler(ss, write_in_two_threads, lambda sock: None)
        messages = MESSAGE.findall(received)
        whole = sum(len(b"<%s-%s:%s>" % found) for found in messages)
        assert whole == len(received), "bytes outside whole messages"
        for name in (b"w0", b"w1"):
            got = [(int(n), len(body)) for writer, n, body in messages if writer == name]
            expected = [(n, len(message(name, n, big)) - len(b"<%s-%d:>" % (name, n)))
                        for n in range(MESSAGES)]
            assert got == expected, name


# ---------------------------------------------------------------------------
# fork() while other threads serve
# ---------------------------------------------------------------------------

FORKS_FROM_HANDLERS = 3
FORKS_FROM_A_THREAD = 3


def child_check(module):
    """What a forked child does before os._exit(): on fastserver it takes
    the module locks that its at-fork hooks replace (another thread may
    have held one at the fork, and the child must not wait for it); each
    must be free at once.  Returns the exit code.

    The child leaves the server alone: on 3.13t a child can find locked for
    ever the lock of an object that other threads were contending for at
    the fork (CPython's per-object locks; the parent's handler threads use
    the server's __dict__ all the time), which is CPython's fork hazard, not
    something fastserver can make safe."""
    if is_stdlib(module):
        return 0
    from fastserver import _quiet, green, pool

    for lock in (_engine._engines_lock, pool._pool_creation_lock, _quiet._counts_lock,
                 green._executor_lock):
        if not lock.acquire(timeout=1.0):
            return 3
        lock.release()
    return 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_a_fork_safe_lock_held_by_another_thread_is_free_in_the_child():
    from fastserver._forksafe import ForkSafeLock

    lock = ForkSafeLock()
    held, done = threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            done.wait(TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(TIMEOUT)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if lock.acquire(timeout=1.0) else 3)
        _, status = os.waitpid(pid, 0)
    finally:
        done.set()
        holder.join(TIMEOUT)
    assert os.waitstatus_to_exitcode(status) == 0  # free in the child
    assert lock.acquire(timeout=TIMEOUT)  # and still the parent's lock here
    lock.release()


class Forks:
    """fork() for a server's handlers and the test's thread: the child runs
    child_check() and exits; the parent reaps it by pid, killing it if it
    has not exited within JOIN_BOUND."""

    def __init__(self, module):
        self.module = module
        self.pids, self.codes = [], []
        self.lock = threading.Lock()

    def fork(self):
        pid = os.fork()
        if pid == 0:
            code = 4
            try:
                code = child_check(self.module)
            finally:
                os._exit(code)
        with self.lock:
            self.pids.append(pid)
        code = self.reap(pid)
        with self.lock:
            self.codes.append(code)
        return code

    def reap(self, pid):
        deadline = time.monotonic() + JOIN_BOUND
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "hung"
            time.sleep(0.001)

    def kill_leftovers(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass  # reaped already, as it should be


def fork_round(module):
    resources, errors, bad_replies = Resources(), [], []
    forks = Forks(module)
    cls = server_class(module, "threading", errors, fork=lambda server: forks.fork())
    server = cls((HOST, 0), echo_handler(module))
    loop = start_loop(server)
    stop = threading.Event()
    clients = []
    try:
        clients = [ThreadCall(chatter, server.server_address, stop, bad_replies)
                   for _ in range(4)]
        forker = ThreadCall(lambda: [forks.fork() for _ in range(FORKS_FROM_A_THREAD)])
        for _ in range(FORKS_FROM_HANDLERS):
            assert echo_once(server.server_address, b"fork\n") == b"forked 0\n"
        assert forker.join(JOIN_BOUND), "the forking thread hung"
        assert forker.exc is None, forker.exc
        assert echo_once(server.server_address) == b"ping\n"  # still serving
    finally:
        stop.set()
        hung = join_all(clients)
        try:
            stop_loop(server, loop)
        finally:
            forks.kill_leftovers()
    assert not hung, "clients hung: %s" % hung
    assert forks.codes == [0] * (FORKS_FROM_HANDLERS + FORKS_FROM_A_THREAD), forks.codes
    assert not bad_replies, bad_replies
    assert all(isinstance(exc, OSError) for exc in errors), errors
    resources.check()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork() on this platform")
# 3.12+ warns when a process with threads forks: this test does it on purpose.
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_fork_while_other_threads_serve(ss):
    """FORK_ROUNDS (4) rounds on a ThreadingTCPServer that 4 clients keep
    busy: 3 handlers fork (asked by a "fork" line) while a thread of the
    test forks 3 times; each child checks one small thing (child_check) and
    os._exit()s, the parent reaps it by pid and goes on serving.  Every
    child exits 0, every answer is the client's own line, and the process
    has its fds and threads back."""
    for _ in range(FORK_ROUNDS):
        fork_round(ss)
