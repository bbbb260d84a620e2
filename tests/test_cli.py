"""``python -m fastserver``: serve, echo and bench (fastserver/cli.py).

The commands run in child processes on loopback, on a port the kernel picks
(port 0, read back from the address line the command prints), on every
fastserver core (``fs``: the child's environment selects it).  Every child
is ended by its pid.  The servers the commands build are also exercised in
this process, on each core.
"""
import contextlib
import errno
import http.client
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from fastserver import _engine, cli

import util
import variants

ADDRESS_LINE = re.compile(r" on (\S+) port (\d+) ")
#: Runs the CLI with SIGINT raising KeyboardInterrupt, as in a terminal.  A
#: test runner started as a background job has SIGINT ignored, and a child
#: inherits that (Python keeps an ignored SIGINT ignored).
AS_IN_A_TERMINAL = (
    "import runpy, signal; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('fastserver', run_name='__main__', alter_sys=True)"
)


#: The commands stop on SIGINT/SIGTERM; Windows has neither to send.
posix_signals = pytest.mark.skipif(os.name != "posix", reason="stops the command with a signal")


def has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


class Command:
    """``python -m fastserver ARGS`` in a child process, ended by its pid."""

    def __init__(self, args, variant, launcher=("-m", "fastserver"), cwd=None):
        self.proc = subprocess.Popen(
            [sys.executable, *launcher, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=variants.child_env(variant), cwd=cwd, text=True)
        self.stdout = self.stderr = ""

    def address(self):
        """(host, port) from the line the command prints once it listens."""
        assert util.wait_readable(self.proc.stdout), "the command printed nothing"
        line = self.proc.stdout.readline()
        match = ADDRESS_LINE.search(line)
        assert match, f"no address in {line!r}; stderr: {self.proc.stderr.read()}"
        self.stdout += line
        return match.group(1), int(match.group(2))

    def stop(self, signum=signal.SIGTERM):
        """Send ``signum``; return the exit status once the command exited."""
        os.kill(self.proc.pid, signum)
        return self.wait()

    def wait(self):
        out, err = self.proc.communicate(timeout=util.TIMEOUT)
        self.stdout += out
        self.stderr += err
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


@contextlib.contextmanager
def running(args, variant, **kwargs):
    command = Command(args, variant, **kwargs)
    try:
        yield command
    finally:
        command.close()


def assert_clean_exit(command, status, message):
    assert status == 0, command.stderr
    assert "Traceback" not in command.stderr, command.stderr
    assert message in command.stdout


@pytest.fixture
def site(tmp_path):
    """A directory to serve: a file, a subdirectory, an HTML-escaped name."""
    (tmp_path / "hello.txt").write_bytes(b"hello, fastserver\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "a&b.txt").write_bytes(b"amp")
    return tmp_path


def fetch(url):
    with urllib.request.urlopen(url, timeout=util.TIMEOUT) as response:
        return response.status, response.headers, response.read()


# ---------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------
@posix_signals
def test_serve_files_listing_head_and_log(fs, variant, site):
    with running(["serve", "-b", "127.0.0.1", "-d", str(site), "0"], variant) as command:
        host, port = command.address()
        assert host == "127.0.0.1"
        base = f"http://127.0.0.1:{port}"

        status, headers, body = fetch(f"{base}/hello.txt")
        assert (status, body) == (200, b"hello, fastserver\n")
        assert headers["Content-Type"] == "text/plain"
        assert fetch(f"{base}/sub/inner.bin")[2] == bytes(range(256)) * 64

        status, headers, listing = fetch(f"{base}/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        for name in (b"hello.txt", b"sub/", b"a&amp;b.txt"):
            assert name in listing

        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=util.TIMEOUT)
        try:
            connection.request("HEAD", "/hello.txt")
            response = connection.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Length") == "18"
            assert response.read() == b""
        finally:
            connection.close()

        with pytest.raises(urllib.error.HTTPError) as missing:
            fetch(f"{base}/missing")
        assert missing.value.code == 404

        assert_clean_exit(command, command.stop(signal.SIGTERM), "Terminated, exiting.")
    log = command.stderr
    assert f"fastserver {cli.__version__}: " in log
    assert '"GET /hello.txt HTTP/1.1" 200' in log
    assert '"HEAD /hello.txt HTTP/1.1" 200' in log
    assert '"GET /missing HTTP/1.1" 404' in log


@posix_signals
def test_serve_reports_the_core_it_runs_on(fs, variant, site):
    with running(["serve", "-b", "127.0.0.1", "-d", str(site), "0"], variant) as command:
        command.address()
        command.stop()
    if variant == "py":
        expected = "python core"
    elif variant == "c-poll":
        expected = "c core, poll poller"
    else:
        expected = f"c core, {_engine.compiled_core.native_backend()} poller"
    assert expected in command.stderr


def test_serve_runs_on_green_handlers_where_they_can(fs, variant, site):
    with running(["serve", "-b", "127.0.0.1", "-d", str(site), "0"], variant) as command:
        command.address()
        command.stop()
    green = variant != "py" and cli.green_handlers_here()
    expected = "green handlers" if green else "a pool of up to 64 threads"
    assert expected in command.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_serve_answers_while_a_thousand_clients_idle_or_trickle(site):
    """A browser's keep-alive and preconnect sockets, and slowloris clients
    that send a request a byte at a time, must not keep a new client
    waiting, however many there are: on green handlers each holds a parked
    greenlet, not a thread.  1,000 idle connections and 100 half-sent
    requests, then a GET; the server's threads stay few."""
    variants.require_green()
    idle_count, trickling_count = 1000, 100
    with running(["serve", "-b", "127.0.0.1", "-d", str(site), "0"], "c-epoll") as command:
        address = command.address()
        clients = []
        try:
            for _ in range(idle_count):
                clients.append(util.tcp_connect(address))
            for _ in range(trickling_count):
                client = util.tcp_connect(address)
                client.sendall(b"GET /hello.txt HTTP/1.1\r\nHo")
                clients.append(client)
            status, _, body = fetch(f"http://{address[0]}:{address[1]}/hello.txt")
            assert (status, body) == (200, b"hello, fastserver\n")
            with open(f"/proc/{command.proc.pid}/status") as f:
                threads = int(next(line for line in f if line.startswith("Threads:")).split()[1])
            assert threads <= 4, f"{threads} threads for {len(clients)} connections"
            # The trickling requests are still served once they are whole.
            for client in clients[idle_count:idle_count + 3]:
                client.sendall(b"st: x\r\nConnection: close\r\n\r\n")
                assert util.recv_until_eof(client).endswith(b"hello, fastserver\n")
        finally:
            for client in clients:
                client.close()
        assert command.stop() == 0


@posix_signals
def test_serve_ctrl_c_exits_cleanly(fs, variant, site):
    args = ["serve", "-b", "127.0.0.1", "-d", str(site), "0"]
    with running(args, variant, launcher=("-c", AS_IN_A_TERMINAL)) as command:
        _, port = command.address()
        assert fetch(f"http://127.0.0.1:{port}/hello.txt")[0] == 200
        status = command.stop(signal.SIGINT)
    assert_clean_exit(command, status, "Keyboard interrupt received, exiting.")


@posix_signals
def test_serve_exits_with_an_idle_keepalive_client(fs, variant, site):
    """A browser keeps its connections open: SIGTERM must not wait for them."""
    args = ["serve", "-b", "127.0.0.1", "-d", str(site), "-p", "HTTP/1.1", "0"]
    with running(args, variant) as command:
        _, port = command.address()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=util.TIMEOUT)
        try:
            for _ in range(2):  # the same connection, kept alive
                connection.request("GET", "/hello.txt")
                response = connection.getresponse()
                assert response.version == 11 and response.read() == b"hello, fastserver\n"
            status = command.stop(signal.SIGTERM)
        finally:
            connection.close()
    assert_clean_exit(command, status, "Terminated, exiting.")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
@posix_signals
def test_serve_ipv6(fs, variant, site):
    with running(["serve", "-b", "::1", "-d", str(site), "0"], variant) as command:
        host, port = command.address()
        assert host == "::1"
        assert f"(http://[::1]:{port}/)" in command.stdout
        assert fetch(f"http://[::1]:{port}/hello.txt")[2] == b"hello, fastserver\n"
        command.stop()


def test_serve_rejects_a_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    done = subprocess.run(
        [sys.executable, "-m", "fastserver", "serve", "-d", str(missing), "0"],
        capture_output=True, text=True, timeout=util.TIMEOUT, env=variants.child_env("py"))
    assert done.returncode == 2
    assert f"not a directory: {missing}" in done.stderr
    assert "Traceback" not in done.stderr


def test_http_server_in_process(fs, site):
    """The server class `serve` builds, on each core, in this process."""
    server = cli.make_http_server("127.0.0.1", 0, site, "HTTP/1.1")
    with util.background_server(server):
        port = server.server_address[1]
        assert server.server_port == port
        assert fetch(f"http://127.0.0.1:{port}/hello.txt")[2] == b"hello, fastserver\n"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_sockets_are_dual_stack(fs, site):
    """As http.server: an IPv6 socket is bound with IPV6_V6ONLY off, so that
    the default (all interfaces, IPv6 first) also serves IPv4 clients.
    Checked at bind time, on loopback: Linux turns the flag on by itself
    once a socket is bound to a specific IPv6 address such as ::1."""

    class RecordingServer(fs.TCPServer):
        def server_bind(self):
            self.v6only_at_bind = self.socket.getsockopt(socket.IPPROTO_IPV6,
                                                         socket.IPV6_V6ONLY)
            super().server_bind()

    class Probe(cli.CommandLineServer, RecordingServer):
        pass

    server = Probe(("::1", 0), fs.BaseRequestHandler, socket.AF_INET6)
    try:
        assert server.socket.family == socket.AF_INET6
        assert server.v6only_at_bind == 0
    finally:
        server.server_close()


@posix_signals
def test_serve_until_stopped_in_process(fs, site):
    """SIGTERM, sent to the main thread while it waits: shutdown(), then 0."""
    server = cli.make_http_server("127.0.0.1", 0, site)
    main_thread = threading.get_ident()

    def fetch_then_terminate():
        fetch(f"http://127.0.0.1:{server.server_address[1]}/hello.txt")
        signal.pthread_kill(main_thread, signal.SIGTERM)

    caller = util.ThreadCall(fetch_then_terminate)
    with server:
        assert cli.serve_until_stopped(server) == 0
    assert caller.join() and caller.exc is None
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


@posix_signals
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_serve_until_stopped_when_the_loop_dies():
    class BrokenServer:
        def serve_forever(self):
            raise RuntimeError("the loop died")

    assert cli.serve_until_stopped(BrokenServer()) == 1


# ---------------------------------------------------------------------------
# echo
# ---------------------------------------------------------------------------
@posix_signals
def test_echo_tcp(fs, variant):
    with running(["echo", "0"], variant) as command:
        host, port = command.address()
        assert host == "127.0.0.1"  # the default: loopback only
        with util.tcp_connect((host, port)) as sock:
            sock.sendall(b"first line\nsecond ")
            assert util.recv_line(sock) == b"first line\n"
            sock.sendall(b"line\n")
            assert util.recv_line(sock) == b"second line\n"
            sock.shutdown(socket.SHUT_WR)
            assert util.recv_until_eof(sock) == b""
        assert util.wait_until(lambda: "closed after 2 line(s)" in read_ready(command))
        assert_clean_exit(command, command.stop(), "Terminated, exiting.")
    assert "connected" in command.stderr


def read_ready(command):
    """What the command wrote to stderr so far (a non-blocking read)."""
    while util.wait_readable(command.proc.stderr, timeout=0):
        chunk = os.read(command.proc.stderr.fileno(), 65536).decode()
        if not chunk:
            break
        command.stderr += chunk
    return command.stderr


@posix_signals
def test_echo_udp(fs, variant):
    with running(["echo", "--udp", "0"], variant) as command:
        host, port = command.address()
        assert "Echoing UDP datagrams" in command.stdout
        for payload in (b"one datagram", b"x" * 1000):
            assert util.udp_roundtrip((host, port), payload) == payload
        assert_clean_exit(command, command.stop(), "Terminated, exiting.")


def test_echo_servers_in_process(fs):
    tcp = cli.make_echo_server("127.0.0.1", 0)
    with util.background_server(tcp):
        with util.tcp_connect(tcp.server_address) as sock:
            sock.sendall(b"ping\n")
            assert util.recv_line(sock) == b"ping\n"
    udp = cli.make_echo_server("127.0.0.1", 0, udp=True)
    with util.background_server(udp):
        assert util.udp_roundtrip(udp.server_address, b"ping") == b"ping"


# ---------------------------------------------------------------------------
# The command line itself
# ---------------------------------------------------------------------------
def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastserver", *args], capture_output=True,
                          text=True, timeout=util.TIMEOUT, cwd=cwd,
                          env=variants.child_env("py"))


def assert_error_line(done, status, message):
    """The command failed with ``status``, and its stderr ends with
    ``message`` on a line of its own, with no traceback; a failure (status
    1) prints that line only, a usage problem (2) the usage before it."""
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1] == message
    if status == 1:
        assert len(lines) == 1, done.stderr


@pytest.fixture
def port_in_use(request):
    """A port on 127.0.0.1 held by a socket of the kind the command needs."""
    kind = socket.SOCK_DGRAM if request.param == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        yield holder.getsockname()[1]


BINDING_COMMANDS = {"serve": ["serve"], "echo": ["echo"], "echo --udp": ["echo", "--udp"]}


@pytest.mark.parametrize(("command", "port_in_use"),
                         [("serve", "tcp"), ("echo", "tcp"), ("echo --udp", "udp")],
                         indirect=["port_in_use"])
def test_port_in_use_is_one_line(command, port_in_use):
    done = run_cli(*BINDING_COMMANDS[command], "-b", "127.0.0.1", str(port_in_use))
    name = command.split()[0]
    assert_error_line(done, 1, f"python -m fastserver {name}: error: cannot listen on "
                               f"127.0.0.1:{port_in_use}: address already in use")


@pytest.mark.parametrize("command", sorted(BINDING_COMMANDS))
@pytest.mark.parametrize(("address", "reason"), [
    ("nosuch.invalid", "cannot resolve the host name ("),
    ("192.0.2.1", "address not available on this machine"),  # TEST-NET-1: never local
])
def test_bad_address_is_one_line(command, address, reason):
    done = run_cli(*BINDING_COMMANDS[command], "-b", address, "8000")
    name = command.split()[0]
    prefix = f"python -m fastserver {name}: error: cannot listen on {address}:8000: "
    assert_error_line(done, 1, done.stderr.splitlines()[-1])
    assert done.stderr.startswith(prefix + reason), done.stderr


@pytest.mark.parametrize("command", sorted(BINDING_COMMANDS))
@pytest.mark.parametrize(("port", "reason"), [
    ("65536", "port must be 0-65535, not 65536"),
    ("-1", "port must be 0-65535, not -1"),
    ("http", "not a port number: 'http'"),
])
def test_port_out_of_range_is_a_usage_error(command, port, reason):
    done = run_cli(*BINDING_COMMANDS[command], port)
    name = command.split()[0]
    assert_error_line(done, 2, f"python -m fastserver {name}: error: argument port: {reason}")
    assert done.stderr.startswith(f"usage: python -m fastserver {name} ")


@pytest.mark.parametrize(("host", "sockaddr", "error", "message"), [
    # No -b: the address getaddrinfo() chose.
    (None, ("::", 8000, 0, 0), errno.EADDRINUSE, "[::]:8000: address already in use"),
    ("localhost", ("127.0.0.1", 80), errno.EACCES,
     "localhost:80: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"),
    ("127.0.0.1", ("127.0.0.1", 9), errno.ENOBUFS, "127.0.0.1:9: no buffer space available"),
])
def test_listen_errors_name_the_address_and_the_reason(host, sockaddr, error, message):
    with pytest.raises(cli.ListenError) as failed:
        with cli.listen_errors_reported(host, sockaddr):
            raise OSError(error, os.strerror(error))
    assert str(failed.value) == "cannot listen on " + message
    assert failed.value.status == 1


def console_script():
    """The ``fastserver`` script pip installed beside this interpreter, if any."""
    if os.name != "posix":
        return None
    return shutil.which("fastserver", path=os.path.dirname(sys.executable))


#: prog, as usage and error lines show it -> the command line that starts it.
LAUNCHERS = {"python -m fastserver": [sys.executable, "-m", "fastserver"],
             "fastserver": [console_script()]}


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request):
    """(prog, argv prefix) for each way of starting the command line."""
    prog = request.param
    if LAUNCHERS[prog][0] is None:
        pytest.skip("no fastserver console script beside this interpreter")
    return prog, LAUNCHERS[prog]


def start(launcher, *args):
    return subprocess.run([*launcher[1], *args], capture_output=True, text=True,
                          timeout=util.TIMEOUT, env=variants.child_env("py"))


@pytest.mark.parametrize(("command", "bad_value", "complaint"), [
    ("serve", ["70000"], "argument port: port must be 0-65535, not 70000"),
    ("echo", ["70000"], "argument port: port must be 0-65535, not 70000"),
    # The suite's own options, parsed by the same parser.
    ("bench", ["--workloads", "nosuch"], "argument --workloads: unknown workload 'nosuch'; "
                                         "known: tcp-base, "),
    ("bench", ["--runs", "many"], "argument --runs: invalid int value: 'many'"),
])
def test_prog_in_every_usage_and_error_line(launcher, command, bad_value, complaint):
    prog = launcher[0]
    done = start(launcher, command, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: {prog} {command} [-h]")
    done = start(launcher, command, "--no-such-option")
    assert done.stderr.startswith(f"usage: {prog} {command} [-h]")
    assert_error_line(done, 2, f"{prog} {command}: error: "
                               "unrecognized arguments: --no-such-option")
    done = start(launcher, command, *bad_value)
    assert done.stderr.startswith(f"usage: {prog} {command} [-h]")
    error = done.stderr.splitlines()[-1]
    assert_error_line(done, 2, error)
    assert error.startswith(f"{prog} {command}: error: {complaint}")


def test_prog_at_the_top_level(launcher):
    prog = launcher[0]
    done = start(launcher, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: {prog} [-h]")
    done = start(launcher)
    assert_error_line(done, 2, f"{prog}: error: the following arguments are required: COMMAND")


def test_version_and_usage():
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"fastserver {cli.__version__} (")
    done = run_cli()
    assert done.returncode == 2 and "COMMAND" in done.stderr
    done = run_cli("serve", "--no-such-option")
    assert done.returncode == 2 and "unrecognized arguments: --no-such-option" in done.stderr


def test_bench_help():
    done = run_cli("bench", "--help")
    assert done.returncode == 0
    for option in ("--plot", "--quick", "--workloads"):
        assert option in done.stdout


def test_bench_plot_needs_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("matplotlib is installed")
    done = run_cli("bench", "--plot", "chart.png")
    assert done.returncode == 2
    assert "pip install 'fastserver[plot]'" in done.stderr
    assert "fastserver bench:" not in done.stdout  # failed before measuring anything


def test_plot_draws_a_report(tmp_path):
    pytest.importorskip("matplotlib")
    from fastserver.bench import plot

    def row(us_per_op, ops):
        return {"server_us_per_op": us_per_op, "ops_per_sec": ops}

    report = {
        "meta": {"python": "3.11.7", "core": "c", "runs": 3, "duration": 3},
        "summary": [{"workload": "udp-base", "stdlib": row(8.5, 117000),
                     "fastserver": row(5.7, 171000), "ratio_us_per_op": 0.67,
                     "ratio_ops_per_sec": 1.46}],
        "shutdown": {"trials": 21, "stdlib": {"median_ms": 262.0},
                     "fastserver": {"median_ms": 0.21}},
    }
    chart = tmp_path / "chart.png"
    plot.draw(report, chart)
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


needs_taskset = pytest.mark.skipif(
    not shutil.which("taskset"), reason="the bench needs Linux and taskset")
needs_a_compiler = pytest.mark.skipif(
    not shutil.which(os.environ.get("CC", "cc")), reason="the bench needs a C compiler")
needs_two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
    reason="the bench needs two CPUs")


def bench_env(tmp_path, **settings):
    """The child's environment for a bench: its C programs are built into a
    cache of the test's own (XDG_CACHE_HOME), never the user's."""
    env = variants.child_env(variants.default_variant())
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.update(settings)
    return env


@needs_taskset
@needs_a_compiler
@needs_two_cpus
def test_bench_quick_from_outside_the_checkout(tmp_path):
    """One short TCP run per implementation and the C reference (~7 s), from
    a directory with no bench/ in it: the suite, its C sources included,
    comes from the installed package, and the C programs are compiled into
    the cache.  The progress lines go to stderr and the table to stdout."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "fastserver", "bench",
         "--quick", "--workloads", "tcp-base", "--json", str(report)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=bench_env(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()
            if line.startswith("tcp-base")]
    assert rows == [["tcp-base", "stdlib"], ["tcp-base", "fastserver"],
                    ["tcp-base", "c-reference"]]  # refserver.c
    assert "0/3 tcp-base: stdlib, run 1 of 1" in done.stderr
    assert "] 3/3" in done.stderr
    assert report.exists()
    built = sorted(path.name.split("-")[0] for path in (tmp_path / "cache" / "fastserver"
                                                        / "bench").iterdir())
    assert built == ["loadgen", "refserver"]


@needs_taskset
@pytest.mark.parametrize("compiler", ["false", "no-such-compiler"])
def test_bench_without_a_compiler_says_what_it_needs(launcher, tmp_path, compiler):
    """One line, before anything is measured: the C load generator needs a
    (working) C compiler."""
    prog = launcher[0]
    if compiler == "false":
        compiler = shutil.which("false")
        reason = f"needs a working C compiler: {compiler} failed on loadgen.c (exit status 1)"
    else:
        reason = (f"needs a C compiler, and {compiler!r} was not found: install gcc or "
                  "clang, or set CC to a C compiler")
    done = subprocess.run([*launcher[1], "bench", "--quick", "--workloads", "tcp-base"],
                          capture_output=True, text=True, timeout=util.TIMEOUT, cwd=tmp_path,
                          env=bench_env(tmp_path, CC=compiler))
    assert_error_line(done, 1, f"{prog} bench: error: building the load generator {reason}")
    assert "fastserver bench:" not in done.stdout


# ---------------------------------------------------------------------------
# The progress bar on a terminal
# ---------------------------------------------------------------------------
class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class Streams:
    stdout = None
    stderr = None


def test_progress_bar_keeps_clear_of_other_output():
    terminal = FakeTerminal()
    streams = Streams()
    streams.stdout = streams.stderr = terminal
    bar = cli.ProgressBar(terminal)
    with bar.keep_clear_of(streams, "stdout", "stderr"):
        bar.update(0, 4, "tcp-base: stdlib, run 1 of 2")
        print("a row of the table", file=streams.stdout)
        bar.update(1, 4, "tcp-base: fastserver, run 1 of 2")
    screen = terminal.getvalue()
    first = f"[{'.' * cli.ProgressBar.WIDTH}] 0/4 tcp-base: stdlib, run 1 of 2"
    # bar, erased, the row on a line of its own, the bar again, then the next.
    erase = "\r" + " " * len(first) + "\r"
    assert screen.startswith(first + erase + "a row of the table\n" + first + erase)
    assert f"[{'#' * (cli.ProgressBar.WIDTH // 4)}" in screen
    assert screen.endswith("\r")  # cleared when done


def test_progress_bar_prints_lines_elsewhere():
    stream = io.StringIO()
    bar = cli.ProgressBar(stream)
    bar.update(1, 2, "udp-base: fastserver, run 1 of 1")
    bar.update(2, 2)
    half = "#" * (cli.ProgressBar.WIDTH // 2) + "." * (cli.ProgressBar.WIDTH // 2)
    assert stream.getvalue() == (f"[{half}] 1/2 udp-base: fastserver, run 1 of 1\n"
                                 f"[{'#' * cli.ProgressBar.WIDTH}] 2/2\n")
