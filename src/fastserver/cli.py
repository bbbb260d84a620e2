"""``python -m fastserver``: serve a directory, echo lines, run the benchmarks.

    python -m fastserver serve [port] [-b ADDRESS] [-d DIRECTORY] [-p VERSION]
    python -m fastserver echo [port] [-b ADDRESS] [--udp]
    python -m fastserver bench [--plot FILE.png] [--quick] [--workloads LIST] ...

``serve`` is ``python -m http.server`` (same options, same handler, same
request log, dual-stack the same way) on a fastserver thread-pool server.
``serve`` and ``echo`` stop cleanly on Ctrl-C and on SIGTERM: exit status
0, no traceback.  ``bench`` runs the benchmark suite, which ships in the
package (fastserver.bench).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import http.server
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from . import _engine
from ._version import __version__
from .bench import options as bench_options
from .green import GreenMixIn, green_unavailable
from .handlers import DatagramRequestHandler, StreamRequestHandler
from .pool import ThreadPoolMixIn as ConcurrencyMixIn
from .servers import TCPServer, UDPServer

if TYPE_CHECKING:
    import socketserver

    from ._typing import RequestType, RetAddress


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, as KeyboardInterrupt is on SIGINT.

    A BaseException, so that no handler's ``except Exception`` swallows it.
    """


def _raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


class CommandError(Exception):
    """A problem the command reports in one line, without a traceback.

    ``status`` is the exit status: 2 for a usage problem (an argument the
    command cannot use, as argparse's own errors), 1 for a command that was
    used right but failed.
    """

    status = 2


class ListenError(CommandError):
    """The server could not listen on the address it was given."""

    status = 1


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------
def best_family(host: str | None, port: int) -> tuple[socket.AddressFamily, Any]:
    """The address family and address to bind, as http.server picks them:
    the first passive address getaddrinfo() gives (host None: all
    interfaces, IPv6 first where the system has it).  A host that does not
    resolve is a ListenError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {format_address((host, port))}: "
                          f"cannot resolve the host name ({exc.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


#: Why bind() or listen() failed, in the words a user needs; other errors
#: keep the system's own.
LISTEN_FAILURES = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available on this machine",
    errno.EAFNOSUPPORT: "address family not supported on this machine",
}


@contextlib.contextmanager
def listen_errors_reported(host: str | None, sockaddr: Any) -> Iterator[None]:
    """Turn an OSError from binding or listening into a ListenError that
    names the address (as given, else as resolved) and the reason."""
    try:
        yield
    except OSError as exc:
        port = sockaddr[1]
        reason = LISTEN_FAILURES.get(exc.errno or 0) or _lowercase_first(
            exc.strerror or str(exc))
        if exc.errno == errno.EACCES and 0 < port < 1024:
            reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        shown = (host, port) if host else sockaddr
        raise ListenError(f"cannot listen on {format_address(shown)}: {reason}") from None


def _lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]


class CommandLineSocket(TCPServer):
    """The command-line servers' socket: in the family its address needs,
    dual-stack for IPv6, reusable at once after a restart."""

    allow_reuse_address = True
    # The listen backlog: TCPServer's 5 makes a burst of clients (a browser
    # opening its connections, a load test) wait for the kernel's SYN-ACK
    # retries, seconds each, while the loop has nothing to accept.
    request_queue_size = 1024
    # An IP address: (host, port), or (host, port, flowinfo, scope_id).
    server_address: tuple[Any, ...]

    def __init__(self, server_address: Any, RequestHandlerClass: Any,
                 family: socket.AddressFamily = socket.AF_INET) -> None:
        # Read by TCPServer.__init__ to make the socket.
        self.address_family = family
        super().__init__(server_address, RequestHandlerClass)

    def server_bind(self) -> None:
        # An IPv6 socket also takes IPv4 clients (as http.server does; some
        # systems default to IPV6_V6ONLY=1).
        if self.address_family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class CommandLineServer(ConcurrencyMixIn, CommandLineSocket):
    """A command-line server on a thread pool that never holds up the exit
    (EchoUDPServer adds UDPServer): where green handlers cannot run."""

    # A client that keeps its connection open must not delay Ctrl-C
    # (http.server's ThreadingHTTPServer makes the same choice).
    daemon_threads = True
    block_on_close = False
    # A keep-alive connection holds its worker while it idles, and a browser
    # opens six per host: more workers than the pool's CPU-based default.
    max_workers = 64


class GreenCommandLineServer(GreenMixIn, CommandLineSocket):
    """A command-line TCP server on green handlers, where they can run: an
    idle or slow client (a browser's keep-alive and preconnect sockets, a
    slowloris) holds a parked greenlet, never a worker, so no number of
    them keeps a new client waiting."""

    # As daemon_threads above: clients still connected at Ctrl-C are cut.
    block_on_close = False


def green_handlers_here() -> bool:
    """Can the TCP commands run on green handlers (greenlet installed, the
    compiled core in use)?"""
    return green_unavailable() is None


class HTTPNames(CommandLineSocket):
    """http.server.HTTPServer's server_bind(): the name and port its
    handlers put in their responses."""

    def server_bind(self) -> None:
        super().server_bind()
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(host)
        self.server_port = port


class HTTPServer(HTTPNames, CommandLineServer):
    """http.server's ThreadingHTTPServer on fastserver's thread pool."""


class GreenHTTPServer(HTTPNames, GreenCommandLineServer):
    """http.server's ThreadingHTTPServer on fastserver's green handlers."""


def make_http_server(host: str | None, port: int, directory: str | os.PathLike[str],
                     protocol: str = "HTTP/1.0") -> HTTPNames:
    """An HTTP server serving ``directory`` with SimpleHTTPRequestHandler:
    on green handlers where they can run, else on the thread pool."""
    root = os.fspath(directory)

    class FileHandler(http.server.SimpleHTTPRequestHandler):
        protocol_version = protocol

        def __init__(self, request: RequestType, client_address: RetAddress,
                     server: socketserver.BaseServer) -> None:
            super().__init__(request, client_address, server, directory=root)

    family, address = best_family(host, port)
    server_class = GreenHTTPServer if green_handlers_here() else HTTPServer
    with listen_errors_reported(host, address):
        return server_class(address, FileHandler, family)


class LineEchoHandler(StreamRequestHandler):
    """Sends every line back as it arrives, until the client closes."""

    def handle(self) -> None:
        peer = format_address(self.client_address)
        log(f"{peer} connected")
        lines = 0
        for line in self.rfile:
            self.wfile.write(line)
            lines += 1
        log(f"{peer} closed after {lines} line(s)")


class DatagramEchoHandler(DatagramRequestHandler):
    """Sends every datagram back to its sender."""

    def handle(self) -> None:
        data = self.rfile.read()
        self.wfile.write(data)
        log(f"{format_address(self.client_address)} {len(data)} bytes")


class EchoUDPServer(CommandLineServer, UDPServer):
    # As UDPServer: SO_REUSEADDR would let a second UDP server bind the same
    # port and take a share of the datagrams.
    allow_reuse_address = False


def make_echo_server(host: str | None, port: int, udp: bool = False) -> CommandLineSocket:
    family, address = best_family(host, port)
    with listen_errors_reported(host, address):
        if udp:
            return EchoUDPServer(address, DatagramEchoHandler, family)
        if green_handlers_here():
            return GreenCommandLineServer(address, LineEchoHandler, family)
        return CommandLineServer(address, LineEchoHandler, family)


# ---------------------------------------------------------------------------
# Running until Ctrl-C or SIGTERM
# ---------------------------------------------------------------------------
STOP_SIGNALS = {signal.SIGINT: "Keyboard interrupt received", signal.SIGTERM: "Terminated"}


def serve_until_stopped(server: CommandLineSocket) -> int:
    """serve_forever() until SIGINT or SIGTERM, then shutdown() and return 0
    (1 if the loop died of an exception, whose traceback is printed).

    On POSIX the loop runs in a thread and the main thread takes the stop
    signals with sigwait(), blocked in every thread: the loop stops through
    shutdown() between requests, never by an exception raised wherever the
    main thread happened to be, and whichever thread the kernel picked to
    deliver a signal to.  Elsewhere (Windows) the loop runs in the main
    thread and Ctrl-C raises KeyboardInterrupt in it, as in http.server.
    """
    if not hasattr(signal, "pthread_sigmask"):
        server.serve_forever()
        return 0
    loop_died = signal.SIGUSR1  # sent by the loop's thread to the main thread
    waited = {*STOP_SIGNALS, loop_died}
    main_thread = threading.get_ident()
    stopping = threading.Event()

    def run_loop() -> None:
        try:
            server.serve_forever()
        finally:
            if not stopping.is_set():
                signal.pthread_kill(main_thread, loop_died)

    # Blocked before the loop's thread starts: it, and every thread it
    # starts, inherit the mask, so only sigwait() below takes these signals.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        loop = threading.Thread(target=run_loop, name="serve_forever")
        loop.start()
        received = signal.sigwait(waited)
        if received != loop_died:
            stopping.set()
            server.shutdown()
        loop.join()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    if received == loop_died:
        return 1
    print(f"\n{STOP_SIGNALS[signal.Signals(received)]}, exiting.", flush=True)
    return 0


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def format_address(address: Any) -> str:
    """``host:port``, ``[v6 host]:port``; no host (all interfaces): ``*:port``."""
    host, port = address[:2]
    if not host:
        host = "*"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_engine(server: CommandLineSocket) -> str:
    """One line on what serves: fastserver's version, core, poller, threads."""
    if isinstance(server, GreenMixIn):
        threads = "green handlers (a greenlet per connection)"
    elif isinstance(server, CommandLineServer):
        threads = f"a pool of up to {server.max_workers} threads"
    else:
        threads = "a thread per connection"
    return (f"fastserver {__version__}: {_engine.CORE_IMPLEMENTATION} core, "
            f"{_engine.core.choose_backend()} poller, {threads}")


def listening_on(server: CommandLineSocket) -> tuple[str, int, str]:
    """host, port and the host as a URL writes it, of the server's socket."""
    host, port = server.socket.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    return host, port, url_host


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------
def command_serve(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.directory):
        raise CommandError(f"not a directory: {args.directory}")
    with make_http_server(args.bind, args.port, args.directory, args.protocol) as server:
        host, port, url_host = listening_on(server)
        log(describe_engine(server))
        # The address line last: once it is out, the server is ready.
        print(f"Serving HTTP on {host} port {port} (http://{url_host}:{port}/) ...", flush=True)
        return serve_until_stopped(server)


def command_echo(args: argparse.Namespace) -> int:
    with make_echo_server(args.bind, args.port, args.udp) as server:
        host, port, _ = listening_on(server)
        kind, client = ("UDP datagrams", "nc -u") if args.udp else ("TCP lines", "nc")
        log(describe_engine(server))
        print(f"Echoing {kind} on {host} port {port} (try: {client} {host} {port}) ...",
              flush=True)
        return serve_until_stopped(server)


def command_bench(args: argparse.Namespace) -> int:
    # Imported here, not at the top: serve and echo never load the suite.
    from .bench import plot, run

    if args.plot:
        try:
            plot.require_matplotlib()
        except plot.PlotError as exc:
            raise CommandError(str(exc)) from None
    bar = ProgressBar(sys.stderr)
    try:
        with bar.keep_clear_of(sys, "stdout", "stderr"):
            status, report = run.run_suite(bench_options.complete(args),
                                           progress=bar.update)
    except KeyboardInterrupt:
        log("bench interrupted")
        return 130
    if args.plot:
        if not (report.get("summary") or report.get("shutdown")):
            log("nothing was measured: no chart drawn")
        else:
            plot.draw(report, args.plot)
            print(f"chart: {args.plot}", flush=True)
    return int(status)


class ProgressBar:
    """``[#####.....] 3/10 label`` on stderr.

    On a terminal it is one line redrawn in place, and output written
    through ``keep_clear_of()`` streams clears it first and redraws it after
    each complete line, so table rows and warnings print on lines of their
    own.  Elsewhere (a pipe, a CI log) it prints one line per step.
    """

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.text = ""  # the latest bar
        self.visible = False

    def update(self, done: int, total: int, label: str | None = None) -> None:
        filled = self.WIDTH * done // total if total else self.WIDTH
        text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}"
        if label:
            text += f" {label}"
        if not self.live:
            self.stream.write(text + "\n")
            self.stream.flush()
            return
        columns = shutil.get_terminal_size().columns
        self.clear()
        self.text = text[:max(columns - 1, 10)]  # a wrapped line cannot be redrawn
        self.redraw()

    def redraw(self) -> None:
        if self.live and self.text and not self.visible:
            self.stream.write(self.text)
            self.stream.flush()
            self.visible = True

    def clear(self) -> None:
        if self.visible:
            self.stream.write("\r" + " " * len(self.text) + "\r")
            self.stream.flush()
            self.visible = False

    @contextlib.contextmanager
    def keep_clear_of(self, module: ModuleType, *names: str) -> Iterator[None]:
        """Route ``module.<name>`` streams (sys.stdout, sys.stderr) through
        the bar for the ``with`` body; restore them and clear the bar after."""
        if not self.live:
            yield
            return
        saved = {name: getattr(module, name) for name in names}
        try:
            for name, stream in saved.items():
                setattr(module, name, _ClearingStream(stream, self))
            yield
        finally:
            for name, stream in saved.items():
                setattr(module, name, stream)
            self.clear()


class _ClearingStream:
    """A text stream that clears the progress bar before each write and
    redraws it after a complete line."""

    def __init__(self, stream: TextIO, bar: ProgressBar) -> None:
        self._stream = stream
        self._bar = bar

    def write(self, text: str) -> int:
        self._bar.clear()
        written = self._stream.write(text)
        self._stream.flush()
        if text.endswith("\n"):
            self._bar.redraw()
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------
def port_number(text: str) -> int:
    """argparse's type for a port: an int from 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {port}")
    return port


#: The command's name in usage and error lines when it runs as the
#: ``fastserver`` console script; ``python -m fastserver`` passes its own.
SCRIPT_PROG = "fastserver"


def build_parser(prog: str = SCRIPT_PROG) -> argparse.ArgumentParser:
    """The command line's parser; each subcommand's parser is its args'
    ``command_parser``, which reports that subcommand's errors."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="fastserver's command line: a static-file HTTP server, an echo "
                    "server and the benchmark suite.")
    parser.add_argument("--version", action="version",
                        version=f"fastserver {__version__} ({_engine.CORE_IMPLEMENTATION} core)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser(
        "serve", help="serve a directory over HTTP, like python -m http.server",
        description="Serve static files over HTTP with http.server's "
                    "SimpleHTTPRequestHandler, on a fastserver thread-pool server. "
                    "Ctrl-C or SIGTERM stops it.")
    serve.add_argument("-b", "--bind", metavar="ADDRESS",
                       help="bind to this address (default: all interfaces)")
    serve.add_argument("-d", "--directory", default=os.getcwd(),
                       help="serve this directory (default: current directory)")
    serve.add_argument("-p", "--protocol", metavar="VERSION", default="HTTP/1.0",
                       help="conform to this HTTP version (default: %(default)s)")
    serve.add_argument("port", default=8000, type=port_number, nargs="?",
                       help="bind to this port (default: %(default)s)")
    serve.set_defaults(run=command_serve, command_parser=serve)

    echo = commands.add_parser(
        "echo", help="a line echo server (TCP, or UDP datagrams) for quick checks",
        description="Send back every line (TCP) or datagram (--udp) received. "
                    "Ctrl-C or SIGTERM stops it.")
    echo.add_argument("-b", "--bind", metavar="ADDRESS", default="127.0.0.1",
                      help="bind to this address (default: %(default)s; an echo "
                           "server on every interface answers anyone)")
    echo.add_argument("--udp", action="store_true", help="echo UDP datagrams")
    echo.add_argument("port", default=0, type=port_number, nargs="?",
                      help="bind to this port (default: a free port, printed)")
    echo.set_defaults(run=command_echo, command_parser=echo)

    bench = commands.add_parser(
        "bench", help="run the stdlib-vs-fastserver benchmark suite",
        description="Run the benchmark suite (fastserver.bench) with a progress bar "
                    "and print its table.  --quick is a smoke test of a few seconds "
                    "per workload; the full table takes about 15 minutes.")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="draw fastserver vs the stdlib per workload into this "
                            "file (needs matplotlib: pip install 'fastserver[plot]')")
    bench_options.add_arguments(bench)
    bench.set_defaults(run=command_bench, command_parser=bench)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = SCRIPT_PROG) -> int:
    """Run the command line (``argv``: sys.argv[1:] by default); the exit
    status.  ``prog`` is the name usage and error lines give the command:
    the console script's, or ``python -m fastserver`` from __main__.py."""
    parser = build_parser(prog)
    args, extra = parser.parse_known_args(argv)
    command_parser: argparse.ArgumentParser = args.command_parser
    if extra:
        # The subcommand's usage, not the top level's: that is where it went wrong.
        command_parser.error("unrecognized arguments: " + " ".join(extra))
    # Signal handlers can only be set from the main thread (a caller may
    # run main() elsewhere; then SIGTERM keeps its default action).
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(args.run(args))
    except CommandError as exc:
        print(f"{command_parser.prog}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("\nKeyboard interrupt received, exiting.", flush=True)
        return 0
    except Terminated:
        print("\nTerminated, exiting.", flush=True)
        return 0
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
