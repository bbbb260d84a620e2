"""The bench's server programs: one workload on the stdlib or on fastserver.

The same handler code runs on either module (``module = socketserver`` or
``fastserver``); only the module the server classes come from changes.

    python bench/servers.py --impl stdlib|fastserver --workload NAME \\
        [--host 127.0.0.1] [--port 0] [--ready-file F] [--backlog N]

Once it is listening it prints ``PORT <n>`` on stdout (and writes ``<n>`` to
--ready-file, atomically), then serves until SIGTERM or SIGINT, shuts down
cleanly and exits 0 (1 if serve_forever() raised).

``--backlog N`` sets ``request_queue_size`` (the listen() backlog) on the
server class, the same on both modules; 0 (the default here) keeps the
class's own value, 5.  bench/run.py passes 64: with 8 or 10 connections
being opened at once, a backlog of 5 makes the kernel drop SYNs, and each
drop stalls a client for the 1 s SYN retransmission timer, which measures
the kernel's timer rather than the server.

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
"""
import argparse
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading

import fastserver

BODY = b"Hello, world!"


def tcp_base(module):
    class Handler(module.BaseRequestHandler):
        def handle(self):
            data = self.request.recv(65536)
            self.request.sendall(data.upper())

    return module.TCPServer, Handler


def tcp_stream(module):
    class Handler(module.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline())

    return module.TCPServer, Handler


def udp_base(module):
    class Handler(module.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            sock.sendto(data, self.client_address)

    return module.UDPServer, Handler


def udp_dgram(module):
    class Handler(module.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read())

    return module.UDPServer, Handler


def tcp_persistent(module):
    class Handler(module.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line)

    class Server(module.ThreadingTCPServer):
        # A client that is still connected at SIGTERM must not block the
        # exit (what http.server's ThreadingHTTPServer does too).
        daemon_threads = True

    return Server, Handler


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

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format, *args):
        pass


def http_server(module):
    """http.server's ThreadingHTTPServer on ``module``, and the handler."""
    return http_classes(module)[1], HelloHandler


def http_classes(module):
    """http.server's HTTPServer and ThreadingHTTPServer, on ``module``."""

    class HTTPServer(module.TCPServer):
        allow_reuse_address = 1

        def server_bind(self):
            module.TCPServer.server_bind(self)
            host, port = self.server_address[:2]
            self.server_name = socket.getfqdn(host)
            self.server_port = port

    class ThreadingHTTPServer(module.ThreadingMixIn, HTTPServer):
        daemon_threads = True

    return HTTPServer, ThreadingHTTPServer


def http_sync(module):
    """http.server's HTTPServer, no threads: the handler's own cost per
    request, which the threading row adds a thread's start and end to."""
    return http_classes(module)[0], HelloHandler


class AsIsHelloHandler(HelloHandler):
    """HelloHandler with StreamRequestHandler's default, Nagle on."""

    disable_nagle_algorithm = False


def http_as_is(module):
    server_class, _ = http_server(module)
    return server_class, AsIsHelloHandler


def http_pool(module):
    """fastserver: ThreadPoolMixIn; the stdlib: ThreadingHTTPServer."""
    http_server_class, threading_server = http_classes(module)
    if module is socketserver:
        return threading_server, HelloHandler
    from fastserver.pool import ThreadPoolMixIn

    class ThreadPoolHTTPServer(ThreadPoolMixIn, http_server_class):
        daemon_threads = True

    return ThreadPoolHTTPServer, HelloHandler


WORKLOADS = {
    "tcp-base": tcp_base,
    "tcp-stream": tcp_stream,
    "udp-base": udp_base,
    "udp-dgram": udp_dgram,
    "tcp-persistent": tcp_persistent,
    "http": http_server,
    "http-sync": http_sync,
    "http-as-is": http_as_is,
    "http-pool": http_pool,
}
IMPLS = {"stdlib": socketserver, "fastserver": fastserver}


def announce(port, ready_file):
    print(f"PORT {port}", flush=True)
    if ready_file:
        tmp = f"{ready_file}.tmp{os.getpid()}"
        with open(tmp, "w") as out:
            out.write(f"{port}\n")
        os.replace(tmp, ready_file)


def with_backlog(server_class, backlog):
    """``server_class`` with ``request_queue_size = backlog`` (0: unchanged)."""
    if not backlog:
        return server_class
    return type(server_class.__name__, (server_class,), {"request_queue_size": backlog})


def serve(server_class, handler, address, ready_file):
    """Serve in a thread; the main thread waits for SIGTERM/SIGINT.

    Returns 0, or 1 when serve_forever() died (it then wakes the main thread
    with SIGUSR1, so that a broken server exits at once instead of idling).
    """
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
    # Blocked in every thread (they inherit the mask); sigwait() takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    server = server_class(address, handler)

    def loop():
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=sorted(IMPLS), required=True)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--backlog", type=int, default=0,
                        help="request_queue_size (0: the class default, 5)")
    args = parser.parse_args(argv)
    module = IMPLS[args.impl]
    server_class, handler = WORKLOADS[args.workload](module)
    server_class = with_backlog(server_class, args.backlog)
    return serve(server_class, handler, (args.host, args.port), args.ready_file)


if __name__ == "__main__":
    sys.exit(main())
