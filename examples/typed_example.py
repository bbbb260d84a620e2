"""A typed fastserver program: handlers and servers subclassed the usual way.

Run it (``python examples/typed_example.py``): it serves a line protocol
over TCP and a datagram echo over UDP on 127.0.0.1, talks to both once, and
stops.  ``mypy --strict examples/typed_example.py`` checks it against
fastserver's annotations (the package ships ``py.typed``).
"""
from __future__ import annotations

import socket
import threading
from typing import Any

import fastserver


class UpperCaseHandler(fastserver.StreamRequestHandler):
    """Answers every line with the same line in upper case."""

    # A line longer than this raises fastserver.LineTooLong in readline().
    max_line_length = 1024

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class ReverseHandler(fastserver.DatagramRequestHandler):
    """Answers every datagram with its bytes reversed."""

    def handle(self) -> None:
        self.wfile.write(self.rfile.read()[::-1])


class LineServer(fastserver.ThreadPoolTCPServer):
    """A pooled TCP server that serves loopback clients only."""

    allow_reuse_address = True
    max_workers = 4
    idle_timeout = 30.0

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, UpperCaseHandler)
        self.served = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host: str = client_address[0]
        return host.startswith("127.")

    def process_request(self, request: Any, client_address: Any) -> None:
        self.served += 1
        super().process_request(request, client_address)


class EchoServer(fastserver.ThreadingUDPServer):
    daemon_threads = True


def talk_to(server: LineServer, line: bytes) -> bytes:
    host, port = server.socket.getsockname()[:2]
    with socket.create_connection((host, port), timeout=5) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


def ask(server: EchoServer, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(data, server.server_address)
        reply, _ = client.recvfrom(1024)
        return reply


def serve_and_talk(lines: LineServer, echo: EchoServer) -> None:
    threads = [
        threading.Thread(target=lines.serve_forever, kwargs={"poll_interval": None}),
        threading.Thread(target=echo.serve_forever),
    ]
    for thread in threads:
        thread.start()
    try:
        print(talk_to(lines, b"hello\nfastserver\n").decode(), end="")
        print(ask(echo, b"!revres").decode())
        status: fastserver.ThreadPoolStatus = lines.pool_status()
        print(f"served {lines.served} connection(s); pool: {status.workers} worker(s)")
    finally:
        lines.shutdown(timeout=5.0)  # fastserver: a graceful drain
        echo.shutdown()
        for thread in threads:
            thread.join()


def main() -> None:
    with LineServer(("127.0.0.1", 0)) as lines:
        with EchoServer(("127.0.0.1", 0), ReverseHandler) as echo:
            serve_and_talk(lines, echo)
    print(f"core: {fastserver.CORE_IMPLEMENTATION}")


if __name__ == "__main__":
    main()
