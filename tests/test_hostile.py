"""Hostile clients against every server flavour, over every transport: no
client, however it misbehaves, may stop a server from serving the next one.

Each test drives one running server with clients that misbehave (garbage,
half-close, connect-and-vanish, RST in the middle of a request or of a
response, a 100 MB line, 1,000 slowloris connections, a flood against
max_connections, a client that never reads, empty, maximal and oversized
datagrams) and then checks that a well-behaved client is still served,
that every error the handlers saw is one a misbehaving client can cause,
and that the server gave back its fds, threads and child processes.

The flavours come from hostile_util.FLAVOURS: sync, threading and forking
run on the stdlib too (the reference behaviour); the thread pool and the
multi-core workers are fastserver's own, skipped on the stdlib with the
reason.  Servers of the flavours that fork run in a child process (see
hostile_util.BatteryServer).  test_robustness.py has the older, TCP-only
cases (raising handlers, fd counts per client kind, a real EMFILE).
"""
import random
import select
import socket
import threading
import time

import pytest

from hostile_util import (
    CLIENT_ERRORS,
    DATAGRAM_TRANSPORTS,
    FLAVOURS,
    FLOOD,
    FORK_WARNING_FILTER,
    STREAM_TRANSPORTS,
    BatteryServer,
    Reporting,
    Reports,
    datagram_client,
    exchange,
    nofile_limit,
    recv_to_eof,
    rss_bytes,
    rst_close,
    server_class,
    stream_connect,
    stream_echo_handler,
    thread_count,
)
from util import TIMEOUT, background_server, short_tmpdir, wait_until

pytestmark = pytest.mark.filterwarnings(FORK_WARNING_FILTER)


# The flavour x transport matrices run on the stdlib (the reference), the
# compiled core and the twin (fixtures ``ss_native`` and ``fs_native``); the
# poll(2) backend of the compiled core is left to the loop-level tests, to
# keep this file fast.


@pytest.fixture
def tmpdir_short():
    with short_tmpdir() as path:
        yield path


@pytest.fixture
def reports():
    channel = Reports()
    yield channel
    channel.close()


def battery(module, variant, flavour, transport, tmpdir, reports, handler=None, **attributes):
    """A BatteryServer (see hostile_util) for the ``with`` body."""
    return BatteryServer(module, variant, {
        "flavour": flavour, "transport": transport, "tmpdir": tmpdir,
        "report_fd": reports.fd, "handler": handler or {"kind": "stream"},
        "server": attributes,
    })


def assert_only_client_errors(reports_seen):
    unexpected = [r for r in reports_seen if r.startswith("error:") and r not in CLIENT_ERRORS]
    assert not unexpected, "handlers failed in ways no client should cause: %s" % unexpected


def garbage(size, seed=6):
    """Every byte value, newlines and NULs included, reproducibly."""
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(size))


# ---------------------------------------------------------------------------
# Stream transports: the whole range of rude clients, one after the other
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stream_server_survives_rude_clients(ss_native, variant, flavour, transport, tmpdir_short,
                                            reports):
    ss = ss_native
    handler = {"kind": "stream", "timeout": TIMEOUT}
    with battery(ss, variant, flavour, transport, tmpdir_short, reports, handler) as server:
        address = server.address

        # Garbage: every byte value, in lines of random lengths; the echo
        # is exact.  Sent in one go and half-closed, so it also proves that
        # a half-closed client still gets every answer.
        noise = garbage(1 << 16)
        assert exchange(transport, address, noise) == noise
        assert exchange(transport, address, b"one\ntwo\nno newline at the end") == (
            b"one\ntwo\nno newline at the end")

        # Connect and vanish, with and without an RST, before or after the
        # server accepted.
        for i in range(20):
            client = stream_connect(transport, address)
            client.close() if i % 2 else rst_close(client)

        # RST in the middle of a request (half a line sent).
        for _ in range(20):
            client = stream_connect(transport, address)
            client.sendall(b"half a request, no newline")
            rst_close(client)

        # RST in the middle of a response: the handler is writing when the
        # client goes; its next write fails, and the server goes on.
        client = stream_connect(transport, address)
        client.sendall(FLOOD)
        reports.wait_for(lambda r: r == "flooding")
        assert client.recv(1000)
        rst_close(client)
        failure, before_failure = reports.wait_for(lambda r: r.startswith("flood-error:"))

        # A well-behaved client is still served, by a live server process.
        assert exchange(transport, address, b"still here\n") == b"still here\n"
        pid = int(exchange(transport, address, b"pid\n"))
        assert pid == server.pid or flavour in ("forking", "workers")
    assert failure[len("flood-"):] in CLIENT_ERRORS, failure
    assert_only_client_errors(before_failure + reports.drain())


# ---------------------------------------------------------------------------
# Datagram transports: empty, garbage, maximal and oversized datagrams
# ---------------------------------------------------------------------------

PACKET_SIZE = 4096


@pytest.mark.parametrize("transport", DATAGRAM_TRANSPORTS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_datagram_server_survives_odd_datagrams(ss_native, variant, flavour, transport,
                                                tmpdir_short, reports):
    ss = ss_native
    with battery(ss, variant, flavour, transport, tmpdir_short, reports, {"kind": "datagram"},
                 max_packet_size=PACKET_SIZE) as server, \
            datagram_client(transport, tmpdir_short) as client:

        def ask(payload):
            client.sendto(payload, server.address)
            return client.recv(1 << 17)

        assert ask(b"") == b""  # a zero-length datagram is a request too
        rng = random.Random(6)
        for _ in range(50):
            noise = garbage(rng.randrange(1, PACKET_SIZE), seed=rng.random())
            assert ask(noise) == noise
        full = garbage(PACKET_SIZE)
        assert ask(full) == full
        # Larger than max_packet_size: cut to it, as recvfrom(max_packet_size)
        # does in the stdlib; the rest of the datagram is gone, not read as
        # the next request.
        assert ask(full + b"beyond") == full
        assert ask(b"x" * 60000) == b"x" * PACKET_SIZE
        # A handler that raises: handle_error, then finish() still sends
        # the (empty) answer, and the next datagram is served.
        assert ask(b"raise") == b""
        assert reports.get() == "error:ValueError"
        assert ask(b"after") == b"after"
    assert_only_client_errors(reports.drain())


def largest_datagram(transport):
    """The largest datagram this host carries on ``transport``: 65507 bytes
    for UDP over IPv4; for Unix sockets it depends on the send buffer."""
    if transport == "udp":
        return 65507
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sender, receiver:
        for size in (212992 - 1024, 163840, 131072, 65507):
            try:
                sender.send(b"\0" * size)
            except OSError:
                continue
            receiver.recv(size)
            return size
    return 65507


@pytest.mark.parametrize("transport", DATAGRAM_TRANSPORTS)
def test_largest_datagram_is_served_whole(ss_native, variant, transport, tmpdir_short, reports):
    ss = ss_native
    size = largest_datagram(transport)
    with battery(ss, variant, "sync", transport, tmpdir_short, reports, {"kind": "datagram"},
                 max_packet_size=size) as server, \
            datagram_client(transport, tmpdir_short) as client:
        payload = garbage(size)
        client.sendto(payload, server.address)
        assert client.recv(size + 1) == payload
        client.sendto(b"small", server.address)
        assert client.recv(size) == b"small"
    assert reports.drain() == []


# ---------------------------------------------------------------------------
# A client that never reads
# ---------------------------------------------------------------------------

STUCK_TIMEOUT = 0.1


@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_client_that_never_reads(fs_native, variant, flavour, transport, tmpdir_short, reports):
    """The handler's writes fill the socket buffers; it gets a timeout (the
    handler's ``timeout``) and handle_error runs; meanwhile the loop and the
    other clients go on (at once on concurrent flavours, after the timeout
    on the sync one)."""
    fs = fs_native
    handler = {"kind": "stream", "timeout": STUCK_TIMEOUT}
    with battery(fs, variant, flavour, transport, tmpdir_short, reports, handler) as server:
        with stream_connect(transport, server.address) as lazy:
            lazy.sendall(FLOOD)
            reports.wait_for(lambda r: r == "flooding")
            for i in range(10):
                assert exchange(transport, server.address, b"other %d\n" % i) == b"other %d\n" % i
            failure, others = reports.wait_for(lambda r: r.startswith("flood-error:"))
            assert failure in ("flood-error:timeout", "flood-error:TimeoutError"), failure
    assert_only_client_errors(others + reports.drain())


def test_client_that_never_reads_meets_idle_timeout(fs_native, variant, tmpdir_short, reports):
    """With the server's ``idle_timeout`` and no handler timeout, the stuck
    write times out all the same."""
    fs = fs_native
    with battery(fs, variant, "threading", "tcp", tmpdir_short, reports,
                 idle_timeout=STUCK_TIMEOUT) as server:
        with stream_connect("tcp", server.address) as lazy:
            lazy.sendall(FLOOD)
            failure, _ = reports.wait_for(lambda r: r.startswith("flood-error:"))
            assert failure in ("flood-error:timeout", "flood-error:TimeoutError"), failure
        assert exchange("tcp", server.address, b"next\n") == b"next\n"


# ---------------------------------------------------------------------------
# 1,000 slowloris connections
# ---------------------------------------------------------------------------

SLOWLORIS = 1000


def open_slowloris(address, count):
    """``count`` connections that each send one byte of a request line."""
    clients = []
    try:
        for _ in range(count):
            client = socket.create_connection(address, timeout=TIMEOUT)
            client.sendall(b"G")
            clients.append(client)
    except BaseException:
        for client in clients:
            client.close()
        raise
    return clients


def test_slowloris_does_not_starve_a_threading_server(fs_native, variant, tmpdir_short, reports):
    """1,000 connections that each sent one byte hold 1,000 handler threads;
    a well-behaved client is served all the same, and once they hang up
    every thread and fd is given back."""
    fs = fs_native
    with nofile_limit(4 * SLOWLORIS + 256):
        threads_before = thread_count()
        handler = {"kind": "stream", "report_each": True}
        with battery(fs, variant, "threading", "tcp", tmpdir_short, reports, handler,
                     request_queue_size=SLOWLORIS) as server:
            clients = open_slowloris(server.address, SLOWLORIS)
            try:
                assert wait_until(lambda: thread_count() >= threads_before + SLOWLORIS)
                assert exchange("tcp", server.address, b"served\n") == b"served\n"
                for client in clients:  # "one byte a minute": the next byte
                    client.sendall(b"E")
                assert exchange("tcp", server.address, b"again\n") == b"again\n"
            finally:
                for client in clients:
                    client.close()
            # Each handler sees EOF; its echo of "GE" may meet the closed socket.
            ended = [reports.get() for _ in range(SLOWLORIS + 2)]
            assert_only_client_errors(ended)
        assert wait_until(lambda: thread_count() == threads_before)


def test_slowloris_meets_idle_timeout(fs_native, variant, tmpdir_short, reports):
    """With ``idle_timeout`` every silent connection is closed by the
    server: the clients see EOF or a reset without doing anything."""
    fs = fs_native
    with nofile_limit(4 * SLOWLORIS + 256):
        with battery(fs, variant, "threading", "tcp", tmpdir_short, reports,
                     request_queue_size=SLOWLORIS, idle_timeout=0.5) as server:
            clients = open_slowloris(server.address, SLOWLORIS)
            try:
                assert exchange("tcp", server.address, b"served\n") == b"served\n"
                for client in clients:
                    try:
                        assert recv_to_eof(client) == b""
                    except ConnectionResetError:
                        pass
            finally:
                for client in clients:
                    client.close()
            assert exchange("tcp", server.address, b"again\n") == b"again\n"
        assert_only_client_errors(reports.drain())


@pytest.mark.parametrize("flavour", ["threading", "pool"])
def test_connection_flood_meets_max_connections(fs_native, variant, flavour, tmpdir_short, reports):
    """300 silent connections at once against ``max_connections = 20`` with
    ``overload = "refuse"``: at most 20 are held (the rest are closed at
    once, so no handler thread is spent on them), and a well-behaved
    client is served as soon as the flood hangs up."""
    fs = fs_native
    threads_before = thread_count()
    with battery(fs, variant, flavour, "tcp", tmpdir_short, reports,
                 request_queue_size=512, max_connections=20, overload="refuse") as server:
        flood = open_slowloris(server.address, 300)
        try:
            # A refused connection is closed by the server: readable (EOF
            # or reset); a held one stays silent.
            assert wait_until(lambda: len(readable(flood)) >= 280), len(readable(flood))
            assert thread_count() <= threads_before + 20 + 1 + 8  # held, loop, pool's idle workers
        finally:
            for client in flood:
                client.close()
        assert exchange("tcp", server.address, b"served\n") == b"served\n"
    assert_only_client_errors(reports.drain())


def readable(sockets):
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    return poller.poll(0)


def test_drain_cuts_slowloris_at_the_deadline(fs_native, tmpdir_short, reports):
    """shutdown(timeout=...) with 50 silent connections in flight: it
    returns once the deadline has passed, having cut them (their handlers
    end with EOF), and every handler thread is gone."""
    fs = fs_native
    threads_before = thread_count()
    cls = server_class(fs, "threading", "tcp", base_extra=(Reporting,), report_fd=reports.fd)
    server = cls(("127.0.0.1", 0), stream_echo_handler(fs, report_each=True))
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    loop.start()
    clients = open_slowloris(server.server_address, 50)
    try:
        assert wait_until(lambda: thread_count() >= threads_before + 51)
        started = time.monotonic()
        server.shutdown(timeout=0.3)
        took = time.monotonic() - started
        loop.join(TIMEOUT)
        assert 0.3 <= took < TIMEOUT, took
        for client in clients:  # cut: the server's side is shut down
            assert recv_to_eof(client) == b""
    finally:
        for client in clients:
            client.close()
        server.server_close()
    assert not loop.is_alive()
    assert_only_client_errors([reports.get() for _ in range(50)])
    assert wait_until(lambda: thread_count() == threads_before)


# ---------------------------------------------------------------------------
# A 100 MB line without a newline, against a server in its own process
# ---------------------------------------------------------------------------

HUGE_LINE = 100 * 2**20
#: How much the server process may grow while it refuses the line: the
#: line limit (1 MiB) several times over, plus socket buffers.
RSS_BOUND = 32 * 2**20


def send_huge_line(transport, address, outcome):
    """Send HUGE_LINE bytes with no newline; the server may cut us off."""
    block = b"x" * (1 << 20)
    try:
        with stream_connect(transport, address) as client:
            for _ in range(HUGE_LINE // len(block)):
                client.sendall(block)
            client.shutdown(socket.SHUT_WR)
            outcome.append(recv_to_eof(client))
    except OSError as exc:  # reset or broken pipe: the server gave up on us
        outcome.append(exc)


@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
@pytest.mark.parametrize("flavour", ["sync", "threading"])
def test_huge_line_without_newline_keeps_memory_bounded(fs_native, variant, flavour, transport,
                                                         tmpdir_short, reports):
    """100 MB with no newline: readline() stops at max_line_length with
    LineTooLong, the handler fails, the server process stays small (its
    RSS is sampled every 5 ms while the line is sent) and serves on."""
    fs = fs_native
    spec = {"flavour": flavour, "transport": transport, "tmpdir": tmpdir_short,
            "report_fd": reports.fd, "handler": {"kind": "stream", "timeout": TIMEOUT},
            "server": {}}
    # In a child process even for these flavours: its RSS is the server's alone.
    with BatteryServer(fs, variant, dict(spec, in_child=True)) as server:
        assert exchange(transport, server.address, b"warm\n") == b"warm\n"
        baseline = peak = rss_bytes(server.pid)
        outcome = []
        sender = threading.Thread(target=send_huge_line, args=(transport, server.address, outcome))
        sender.start()
        while sender.is_alive():
            peak = max(peak, rss_bytes(server.pid))
            time.sleep(0.005)
        sender.join()
        assert reports.get() == "error:LineTooLong"
        grown = peak - baseline
        assert grown < RSS_BOUND, "the server grew by %.1f MB" % (grown / 2**20)
        assert exchange(transport, server.address, b"next\n") == b"next\n"


# ---------------------------------------------------------------------------
# Garbage to the stdlib's own HTTP handler
# ---------------------------------------------------------------------------


def test_garbage_to_http_server_handler(ss):
    """http.server's handler on a fastserver server answers garbage with an
    error status (or hangs up) and serves the next request."""
    import http.server

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = type("HTTPServer", (ss.TCPServer,), {"allow_reuse_address": True})(
        ("127.0.0.1", 0), Quiet)
    rng = random.Random(6)
    with background_server(server):
        for i in range(30):
            noise = garbage(rng.randrange(1, 3000), seed=i) + b"\r\n\r\n"
            reply = exchange("tcp", server.server_address, noise)
            # An error status, or for a "request" without a version (HTTP/0.9)
            # the error page alone; or a hang-up.
            assert reply == b"" or reply.startswith((b"HTTP/", b"<!DOCTYPE HTML>")), reply[:80]
        reply = exchange("tcp", server.server_address, b"GET / HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"ok")
