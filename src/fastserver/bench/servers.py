"""The bench's server programs: one workload on the stdlib or on fastserver.

The same handler code runs on either module (``module = socketserver`` or
``fastserver``); only the module the server classes come from changes.

    python -m fastserver.bench.servers --impl stdlib|fastserver --workload NAME \\
        [--host 127.0.0.1] [--port 0] [--ready-file F] [--backlog N]
        [--work-iterations N]
    python -m fastserver.bench.servers --calibrate-us 1000

Once it is listening it prints ``PORT <n>`` on stdout (and writes ``<n>`` to
--ready-file, atomically), then serves until SIGTERM or SIGINT, shuts down
cleanly and exits 0 (1 if serve_forever() raised).

``--backlog N`` sets ``request_queue_size`` (the listen() backlog) on the
server class, the same on both modules; 0 (the default here) keeps the
class's own value, 5.  run.py passes 64: with 8 or 10 connections
being opened at once, a backlog of 5 makes the kernel drop SYNs, and each
drop stalls a client for the 1 s SYN retransmission timer, which measures
the kernel's timer rather than the server.

``--work-iterations N`` is the size of the CPU-bound workloads' work:
``burn(N)``, a deterministic pure-Python loop.  ``--calibrate-us US``
prints the N that takes about US microseconds of CPU on this interpreter
and exits; run.py runs it once per bench (pinned to the server's
CPU) and passes the same N to every server of that bench, stdlib and
fastserver alike.

Workloads:
  tcp-base        TCPServer + BaseRequestHandler: recv, sendall(upper())
  tcp-stream      TCPServer + StreamRequestHandler: echo one line
  udp-base        UDPServer + BaseRequestHandler: echo the datagram
  udp-dgram       UDPServer + DatagramRequestHandler: echo via rfile/wfile
  tcp-persistent  ThreadingTCPServer + StreamRequestHandler: echo every line
                  (daemon_threads, as ThreadingHTTPServer has)
  http            http.server.BaseHTTPRequestHandler, HTTP/1.1, a 13-byte
                  body, on a ThreadingHTTPServer built from the module
                  (Nagle off: see HelloHandler)
  http-sync       the http handler on HTTPServer (no thread per request)
  http-as-is      the same handler without disable_nagle_algorithm, as
                  people write it: what each module's defaults give
                  (fastserver sets TCP_NODELAY on accepted connections)
  http-pool       the http handler on fastserver's ThreadPoolMixIn, against
                  the stdlib's ThreadingHTTPServer (a thread per connection)
  threaded-cpu    ThreadingTCPServer + StreamRequestHandler: every line
                  costs burn(--work-iterations) (~1 ms), then is echoed
  pool-cpu        the same handler on fastserver's ThreadPoolTCPServer,
                  against the stdlib's ThreadingTCPServer (it has no pool)
  convoy          ThreadingTCPServer: a line of WORK_LINE bytes or more
                  costs BUSY_UNITS times burn(--work-iterations) (~20 ms)
                  before its echo, a shorter one is echoed at once; one
                  connection sending long lines keeps a thread busy, the
                  other's round trips show how long a trivial request
                  waits for it
"""
from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import fastserver

#: What a workload gives: the server class and the handler class, both
#: made from the module measured (so typed Any: socketserver's or fastserver's).
ServerAndHandler = tuple[Any, Any]

BODY = b"Hello, world!"
#: convoy: lines at least this long get the work, shorter ones none.
WORK_LINE = 128
#: convoy: a long line costs this many times the work of the CPU-bound rows
#: (~20 ms): longer than the interpreter's switch interval (5 ms), so that on
#: a GIL build the busy thread gives the GIL up only when asked to, as in
#: any handler that computes for a while, not between its own short requests
#: (the trivial request would then wait for the end of one ~1 ms line only).
BUSY_UNITS = 20
#: The CPU-bound workloads' loop count (main() sets it from --work-iterations).
work_iterations = 0


def burn(iterations: int) -> int:
    """Deterministic pure-Python work: a loop of integer arithmetic that
    makes no call and takes no lock, so on a GIL build it holds the GIL
    throughout (but for the interpreter's forced switches), and on a
    free-threaded build it runs in parallel with anything else."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def calibrate(work_us: float, trials: int = 15, spacing: float = 0.05) -> int:
    """The ``burn()`` loop count that costs about ``work_us`` microseconds.

    Measured in CPU time of this thread (time.thread_time), not wall time:
    on a shared machine a run that other processes preempt is not slower
    in CPU time.  The best of ``trials`` (after a warm-up that lets the
    interpreter specialize the loop) is the undisturbed cost: a disturbed
    run is only ever slower (cache misses, a busy sibling hyperthread, a
    virtual CPU whose host is busy).  The trials at the final size are
    ``spacing`` seconds apart, so that they sample more than one moment of
    a machine whose speed drifts (on the shared development VM the same
    loop's CPU time varies by up to 1.6x from one second to the next).
    """
    probe = 10000
    for _ in range(3):
        burn(probe)
    per_iteration = min(_cpu_time(burn, probe) for _ in range(trials)) / probe
    # Again at the size wanted: a longer loop amortizes the call and the clock.
    iterations = max(1, round(work_us * 1e-6 / per_iteration))
    best = float("inf")
    for _ in range(trials):
        best = min(best, _cpu_time(burn, iterations))
        time.sleep(spacing)
    return max(1, round(work_us * 1e-6 * iterations / best))


def _cpu_time(func: Callable[[int], object], arg: int) -> float:
    start = time.thread_time()
    func(arg)
    return time.thread_time() - start


def tcp_base(module: Any) -> ServerAndHandler:
    class Handler(module.BaseRequestHandler):
        def handle(self) -> None:
            data = self.request.recv(65536)
            self.request.sendall(data.upper())

    return module.TCPServer, Handler


def tcp_stream(module: Any) -> ServerAndHandler:
    class Handler(module.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline())

    return module.TCPServer, Handler


def udp_base(module: Any) -> ServerAndHandler:
    class Handler(module.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            sock.sendto(data, self.client_address)

    return module.UDPServer, Handler


def udp_dgram(module: Any) -> ServerAndHandler:
    class Handler(module.DatagramRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read())

    return module.UDPServer, Handler


def tcp_persistent(module: Any) -> ServerAndHandler:
    class Handler(module.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                self.wfile.write(line)

    class Server(module.ThreadingTCPServer):
        # A client that is still connected at SIGTERM must not block the
        # exit (what http.server's ThreadingHTTPServer does too).
        daemon_threads = True

    return Server, Handler


def green_persistent(module: Any) -> ServerAndHandler:
    """tcp-persistent's handler on green handlers (fastserver.green), set
    against the stdlib's ThreadingTCPServer: what a thread per connection
    is replaced by."""
    server_class, handler = tcp_persistent(module)
    if module is socketserver:
        return server_class, handler
    from fastserver import green

    class GreenServer(green.GreenTCPServer):
        # As daemon_threads above: connected clients do not hold the exit.
        block_on_close = False

    return GreenServer, handler


def green_http(module: Any) -> ServerAndHandler:
    """http's handler (keep-alive) on green handlers, against the stdlib's
    ThreadingHTTPServer."""
    server_class, handler = http_server(module)
    if module is socketserver:
        return server_class, handler
    from fastserver import green

    http_server_class: Any = http_classes(module)[0]

    class GreenHTTPServer(green.GreenMixIn, http_server_class):
        block_on_close = False

    return GreenHTTPServer, handler


class HelloHandler(http.server.BaseHTTPRequestHandler):
    """GET anything: 200 with a 13-byte body; keep-alive unless asked not to.

    Two departures from a bare handler, the same on both modules:
    ``disable_nagle_algorithm`` (a documented StreamRequestHandler switch),
    because http.server writes the headers and the body in two sends and,
    with Nagle on, every keep-alive response waits ~40 ms for the client's
    delayed ACK (~230 requests/s whatever the server); and a
    ``Connection: close`` header when the request asked for it, as HTTP/1.1
    wants, without which wrk takes the response for keep-alive and counts
    the server's close as a read error.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def http_server(module: Any) -> ServerAndHandler:
    """http.server's ThreadingHTTPServer on ``module``, and the handler."""
    return http_classes(module)[1], HelloHandler


def http_classes(module: Any) -> ServerAndHandler:
    """http.server's HTTPServer and ThreadingHTTPServer, on ``module``."""

    class HTTPServer(module.TCPServer):
        allow_reuse_address = 1

        def server_bind(self) -> None:
            module.TCPServer.server_bind(self)
            host, port = self.server_address[:2]
            self.server_name = socket.getfqdn(host)
            self.server_port = port

    class ThreadingHTTPServer(module.ThreadingMixIn, HTTPServer):
        daemon_threads = True

    return HTTPServer, ThreadingHTTPServer


def http_sync(module: Any) -> ServerAndHandler:
    """http.server's HTTPServer, no threads: the handler's own cost per
    request, which the threading row adds a thread's start and end to."""
    return http_classes(module)[0], HelloHandler


class AsIsHelloHandler(HelloHandler):
    """HelloHandler with StreamRequestHandler's default, Nagle on."""

    disable_nagle_algorithm = False


def http_as_is(module: Any) -> ServerAndHandler:
    server_class, _ = http_server(module)
    return server_class, AsIsHelloHandler


def http_pool(module: Any) -> ServerAndHandler:
    """fastserver: ThreadPoolMixIn; the stdlib: ThreadingHTTPServer."""
    http_server_class: Any
    http_server_class, threading_server = http_classes(module)
    if module is socketserver:
        return threading_server, HelloHandler
    from fastserver.pool import ThreadPoolMixIn

    class ThreadPoolHTTPServer(ThreadPoolMixIn, http_server_class):
        daemon_threads = True

    return ThreadPoolHTTPServer, HelloHandler


def echo_after_work(module: Any) -> Any:
    """A StreamRequestHandler that echoes every line after burn()."""
    iterations = work_iterations
    if iterations < 1:
        raise SystemExit("the CPU-bound workloads need --work-iterations N (N >= 1)")

    class Handler(module.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                burn(iterations)
                self.wfile.write(line)

    return Handler


def threaded_cpu(module: Any) -> ServerAndHandler:
    """A thread per connection, each line ~1 ms of pure Python: one core's
    worth per thread.  On a GIL build the threads take turns; without the
    GIL they run at once, on as many cores as the server may use."""

    class Server(module.ThreadingTCPServer):
        daemon_threads = True  # as tcp_persistent

    return Server, echo_after_work(module)


def pool_cpu(module: Any) -> ServerAndHandler:
    """threaded_cpu on fastserver's ThreadPoolTCPServer (default max_workers,
    more than the bench's 4 connections, so each connection has a worker);
    the stdlib has no pool: its row is ThreadingTCPServer, as http-pool's."""
    if module is socketserver:
        return threaded_cpu(module)

    class Server(module.ThreadPoolTCPServer):
        daemon_threads = True

    return Server, echo_after_work(module)


def convoy(module: Any) -> ServerAndHandler:
    """ThreadingTCPServer; lines of WORK_LINE bytes or more are CPU-bound."""
    iterations = work_iterations * BUSY_UNITS
    if iterations < 1:
        raise SystemExit("the convoy workload needs --work-iterations N (N >= 1)")

    class Handler(module.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                if len(line) >= WORK_LINE:
                    burn(iterations)
                self.wfile.write(line)

    class Server(module.ThreadingTCPServer):
        daemon_threads = True

    return Server, Handler


WORKLOADS: dict[str, Callable[[Any], ServerAndHandler]] = {
    "tcp-base": tcp_base,
    "tcp-stream": tcp_stream,
    "udp-base": udp_base,
    "udp-dgram": udp_dgram,
    "tcp-persistent": tcp_persistent,
    "green-persistent": green_persistent,
    "green-http": green_http,
    "http": http_server,
    "http-sync": http_sync,
    "http-as-is": http_as_is,
    "http-pool": http_pool,
    "threaded-cpu": threaded_cpu,
    "pool-cpu": pool_cpu,
    "convoy": convoy,
}
IMPLS: dict[str, ModuleType] = {"stdlib": socketserver, "fastserver": fastserver}


def announce(port: int, ready_file: str | None) -> None:
    print(f"PORT {port}", flush=True)
    if ready_file:
        tmp = f"{ready_file}.tmp{os.getpid()}"
        with open(tmp, "w") as out:
            out.write(f"{port}\n")
        os.replace(tmp, ready_file)


def with_backlog(server_class: Any, backlog: int) -> Any:
    """``server_class`` with ``request_queue_size = backlog`` (0: unchanged)."""
    if not backlog:
        return server_class
    return type(server_class.__name__, (server_class,), {"request_queue_size": backlog})


def serve(server_class: Any, handler: Any, address: tuple[str, int],
          ready_file: str | None) -> int:
    """Serve in a thread; the main thread waits for SIGTERM/SIGINT.

    Returns 0, or 1 when serve_forever() died (it then wakes the main thread
    with SIGUSR1, so that a broken server exits at once instead of idling).
    """
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
    # Blocked in every thread (they inherit the mask); sigwait() takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    server = server_class(address, handler)

    def loop() -> None:
        try:
            server.serve_forever()
        finally:  # the traceback, if any, is printed by threading
            os.kill(os.getpid(), signal.SIGUSR1)

    thread = threading.Thread(target=loop, name="serve_forever")
    thread.start()
    received = None
    try:
        announce(server.server_address[1], ready_file)
        received = signal.sigwait(signals)
    finally:
        if received != signal.SIGUSR1:  # else the loop has already ended
            server.shutdown()
        thread.join()
        server.server_close()
    return 1 if received == signal.SIGUSR1 else 0


def serve_uvloop(workload: str, address: tuple[str, int], ready_file: str | None) -> int:
    """The persistent workloads on uvloop's Protocol API: the event-loop
    floor a blocking-handler server is compared with (no handler objects,
    no blocking calls: a callback per read).  Until SIGTERM/SIGINT."""
    if workload not in UVLOOP_WORKLOADS:
        raise SystemExit(f"uvloop serves {', '.join(UVLOOP_WORKLOADS)} only, not {workload}")
    import asyncio

    import uvloop

    class LineEcho(asyncio.Protocol):
        """Echo every complete line, as tcp-persistent's handler does."""

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.pending = b""

        def data_received(self, data: bytes) -> None:
            data = self.pending + data if self.pending else data
            end = data.rfind(b"\n") + 1
            if end:
                self.transport.write(data[:end])
            self.pending = data[end:]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(LineEcho, *address, backlog=128)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        announce(server.sockets[0].getsockname()[1], ready_file)
        await stop.wait()
        server.close()

    uvloop.run(main())
    return 0


#: The workloads serve_uvloop() knows.
UVLOOP_WORKLOADS = ("tcp-persistent", "green-persistent")


def main(argv: Sequence[str] | None = None) -> int:
    global work_iterations
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibrate-us", type=float,
                        help="print the burn() loop count that costs this many "
                             "microseconds of CPU here, and exit")
    parser.add_argument("--impl", choices=sorted([*IMPLS, "uvloop"]))
    parser.add_argument("--workload", choices=sorted(WORKLOADS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--backlog", type=int, default=0,
                        help="request_queue_size (0: the class default, 5)")
    parser.add_argument("--work-iterations", type=int, default=0,
                        help="burn() loop count of the CPU-bound workloads")
    args = parser.parse_args(argv)
    if args.calibrate_us is not None:
        print(calibrate(args.calibrate_us), flush=True)
        return 0
    if not (args.impl and args.workload):
        parser.error("--impl and --workload are required (or --calibrate-us)")
    work_iterations = args.work_iterations
    if args.impl == "uvloop":
        return serve_uvloop(args.workload, (args.host, args.port), args.ready_file)
    module = IMPLS[args.impl]
    server_class, handler = WORKLOADS[args.workload](module)
    server_class = with_backlog(server_class, args.backlog)
    return serve(server_class, handler, (args.host, args.port), args.ready_file)


if __name__ == "__main__":
    sys.exit(main())
