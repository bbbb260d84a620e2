"""The Python examples of README.md and docs/*.md, run as written.

Every ```python block of those documents is a whole program.  The test
saves each one in a fresh directory, runs it with this interpreter (the
installed fastserver, on the core this run uses), talks to it with a real
client (a socket, http.client, ssl), checks the answers and stops it as a
user would: Ctrl-C, or SIGTERM where the example says that is its signal.
(test_examples.py does the same for the socketserver documentation's own
examples, in this process.)

The documents follow three conventions, which this module enforces:

- **A name on the first line.**  A block starts with a comment naming the
  program (``# quickstart.py``): the file name a reader saves it under, and
  the key of CHECKS, the table that says how to drive it.  A block without
  a name, a name without a check and a check without its block all fail,
  so a new example cannot go untested and a removed one leaves no stale
  check behind.
- **Servers say where they serve.**  One that binds prints ``serving on``
  and its ``server_address``, flushed, before it serves; it binds port 0
  (a free port), so that examples never collide with each other or with
  anything else on the machine.
- **Fragments are marked.**  A block that is deliberately not a program
  (the one-line import at the top of the README) has ``<!-- fragment -->``
  on the line before its fence; it is compiled, not run.

Environments an example needs are simulated as the other tests do: TLS
examples run beside a certificate made with the documented ``openssl``
command (docs/tls.md's ```sh block), and systemd socket activation is
LISTEN_FDS / LISTEN_PID with the socket on fd 3 (as test_inherit.py
does), besides a run started by hand.
"""
import ast
import collections
import functools
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import variants
from util import HOST, TIMEOUT, recv_until_eof, tcp_connect, tcp_roundtrip, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

# The documents live in the checkout; an unpacked sdist carries the tests
# and README.md but not docs/, so there is nothing to check against there.
if not os.path.isdir(DOCS):
    pytest.skip("docs/ is not here (not a checkout)", allow_module_level=True)
# The examples are stopped with signals and their workers found by process
# group; a few use fork() and systemd's conventions.
if os.name != "posix":
    pytest.skip("the examples are run and stopped as POSIX processes", allow_module_level=True)

DOCUMENTS = [os.path.join(ROOT, "README.md")] + sorted(
    os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))

FRAGMENT_MARK = "<!-- fragment -->"
PYTHON_LANGUAGES = ("python", "py", "python3")
OPENING_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
CLOSING_FENCE = re.compile(r"^\s*```\s*$")
NAME_LINE = re.compile(r"#\s*([\w-]+\.py)\s*$")
SERVING_LINE = re.compile(r"^serving on (.+)$")

CTRL_C_EXITS = (0, -signal.SIGINT)  # an uncaught KeyboardInterrupt ends in SIGINT


# ---------------------------------------------------------------------------
# The blocks of the documents
# ---------------------------------------------------------------------------


class Block(collections.namedtuple("Block", "document line language code fragment")):
    """One fenced block: the document (relative to the checkout), the line
    of its opening fence, its language, its code (dedented) and whether a
    fragment mark precedes it."""

    @property
    def name(self):
        """The program's name from its first line, or None."""
        first_line = self.code.split("\n", 1)[0]
        match = NAME_LINE.fullmatch(first_line.strip())
        return match.group(1) if match else None

    @property
    def where(self):
        return "%s:%d" % (self.document, self.line)


def fenced_blocks(path):
    """Every fenced block of a Markdown file, in order."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    document = os.path.relpath(path, ROOT)
    blocks = []
    index = 0
    while index < len(lines):
        opening = OPENING_FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not CLOSING_FENCE.match(lines[end]):
            end += 1
        assert end < len(lines), "%s:%d: a fence that is never closed" % (document, index + 1)
        before = [line.strip() for line in lines[:index] if line.strip()]
        blocks.append(Block(
            document=document,
            line=index + 1,
            language=opening.group(2).lower(),
            code=textwrap.dedent("\n".join(lines[index + 1:end])) + "\n",
            fragment=bool(before) and before[-1] == FRAGMENT_MARK,
        ))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in fenced_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language in PYTHON_LANGUAGES]
PROGRAMS = [block for block in PYTHON_BLOCKS if not block.fragment]


def certificate_command():
    """docs/tls.md's shell command that makes server.pem and server.key."""
    commands = [block.code for block in ALL_BLOCKS
                if block.document == os.path.join("docs", "tls.md")
                and block.language in ("sh", "console", "bash") and "openssl req" in block.code]
    assert len(commands) == 1, "docs/tls.md should show one openssl command for a test certificate"
    return commands[0]


# ---------------------------------------------------------------------------
# Running an example
# ---------------------------------------------------------------------------

#: Run in the example's process before the example: Ctrl-C raises
#: KeyboardInterrupt as in a terminal (a test runner started as a background
#: job has SIGINT ignored, and Python keeps an inherited ignored SIGINT
#: ignored); the sockets to inherit (fds in argv[1]) are moved to fds 3, 4,
#: ... with LISTEN_FDS / LISTEN_PID naming this process, which is what
#: systemd does between fork and exec; then the example replaces it, with
#: the same pid.
LAUNCHER = """
import fcntl, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
passed = [int(fd) for fd in sys.argv[1].split(",") if fd]
if passed:
    # Out of the way first, so that no passed fd is overwritten before it moves.
    spare = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in passed]
    for fd in passed:
        os.close(fd)
    for n, fd in enumerate(spare):
        os.dup2(fd, 3 + n)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(passed))
    os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, sys.argv[2]])
"""


def unexpected_errors(stderr):
    """The tracebacks in ``stderr`` that are not the KeyboardInterrupt of a
    Ctrl-C, and any "Exception ignored" report."""
    errors = []
    for traceback in stderr.split("Traceback (most recent call last):")[1:]:
        last_line = traceback.rstrip().splitlines()[-1]
        if last_line != "KeyboardInterrupt":
            errors.append("Traceback (most recent call last):" + traceback)
    errors += [line for line in stderr.splitlines() if line.startswith("Exception ignored")]
    return errors


class Program:
    """One example running in its own process (and process group), with its
    output collected as it comes."""

    def __init__(self, path, directory, inherit=()):
        fds = [sock.fileno() for sock in inherit]
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), path],
            cwd=directory,
            env=variants.child_env(variants.default_variant()),
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group: workers it forks can be found (and, if
            # the example failed to stop them, ended) by that group's id.
            start_new_session=True,
        )
        self.pid = self.process.pid
        self._output = {"stdout": [], "stderr": []}
        self._ended = set()  # the streams read to EOF
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._collect, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, name, stream):
        for line in iter(stream.readline, b""):
            with self._changed:
                self._output[name].append(line.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._changed:
            self._ended.add(name)
            self._changed.notify_all()

    @property
    def stdout(self):
        with self._changed:
            return "".join(self._output["stdout"])

    @property
    def stderr(self):
        with self._changed:
            return "".join(self._output["stderr"])

    def describe(self):
        return "stdout:\n%s\nstderr:\n%s" % (self.stdout, self.stderr)

    def wait_for(self, pattern, stream="stdout"):
        """The first match of ``pattern`` (a regex, multiline) in the
        stream's output, waiting for it up to TIMEOUT."""
        regex = re.compile(pattern, re.MULTILINE)

        def found():
            return regex.search("".join(self._output[stream]))

        with self._changed:
            self._changed.wait_for(lambda: found() or stream in self._ended, TIMEOUT)
            match = found()
            ended = stream in self._ended
        assert match, "%r never appeared on the example's %s (%s)\n%s" % (
            pattern, stream, "it closed its %s" % stream if ended else "in %s s" % TIMEOUT,
            self.describe())
        return match

    def address(self):
        """The address the example printed with ``serving on``."""
        printed = self.wait_for(SERVING_LINE.pattern).group(1)
        try:
            return ast.literal_eval(printed)
        except (ValueError, SyntaxError):
            return printed  # an AF_UNIX path prints as itself

    def wait(self, returncodes=(0,)):
        """Wait (up to TIMEOUT) for the example to exit; check how it
        exited, that it left no process of its group behind and no
        unexpected traceback."""
        try:
            returncode = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = None
        if returncode is None:
            self.kill()
            pytest.fail("the example did not exit within %s s\n%s" % (TIMEOUT, self.describe()))
        for reader in self._readers:
            reader.join(TIMEOUT)
        assert returncode in returncodes, "exit status %s, expected one of %s\n%s" % (
            returncode, returncodes, self.describe())
        assert wait_until(self._group_gone), (
            "processes of the example's group outlived it\n" + self.describe())
        errors = unexpected_errors(self.stderr)
        assert not errors, "errors on the example's stderr:\n" + "\n".join(errors)
        return returncode

    def stop(self, signum=signal.SIGINT, returncodes=CTRL_C_EXITS):
        """Send ``signum`` to the example (its pid only, as a supervisor
        would) and wait() for it to exit."""
        os.kill(self.pid, signum)
        return self.wait(returncodes)

    def _group_gone(self):
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def kill(self):
        """End the example and anything it started, at once."""
        if not self._group_gone():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def close(self):
        if self.process.poll() is None or not self._group_gone():
            self.kill()
        for reader in self._readers:
            reader.join(TIMEOUT)
        self.process.stdout.close()
        self.process.stderr.close()

    # ``with example.start() as program``: whatever happens in the body,
    # the example and anything it started are ended on the way out.
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class Example:
    """An example saved in its own directory, ready to be started."""

    def __init__(self, block, directory):
        self.block = block
        self.directory = str(directory)
        self.path = os.path.join(self.directory, block.name)
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(block.code)

    def start(self, inherit=()):
        return Program(self.path, self.directory, inherit)

    def make_certificate(self):
        """server.pem and server.key in the example's directory, made by the
        documented openssl command."""
        pytest.importorskip("ssl")
        if not shutil.which("openssl"):
            pytest.skip("no openssl command to make the example's certificate")
        subprocess.run(["sh", "-c", certificate_command()], cwd=self.directory, check=True,
                       capture_output=True, timeout=60)

    def client_context(self):
        """A client that trusts the certificate make_certificate() made, as
        docs/tls.md says a client does."""
        import ssl

        return ssl.create_default_context(cafile=os.path.join(self.directory, "server.pem"))


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


def line_roundtrip(address, data):
    """Send ``data``, close the sending side, read the answer to EOF."""
    return tcp_roundtrip(address, data, shut_wr=True)


def tls_roundtrip(address, data, context):
    with tcp_connect(address) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(data)
            return recv_until_eof(sock)


def plain_client_at_a_tls_port(address):
    """A client speaking plain HTTP to a TLS port: the server ends the
    connection (EOF, perhaps after a TLS alert, or a reset) instead of
    leaving it open until the client's timeout."""
    with tcp_connect(address) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            recv_until_eof(sock)
        except ConnectionResetError:
            pass


def http_get(connection, path):
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


# ---------------------------------------------------------------------------
# The checks, one per example
# ---------------------------------------------------------------------------


def check_quickstart(example):
    with example.start() as program:
        address = program.address()
        assert line_roundtrip(address, b"hello world\n") == b"HELLO WORLD"
        program.stop()
    assert "Received from 127.0.0.1:\nb'hello world'\n" in program.stdout


def check_line_server(transform, example):
    """A server that answers each line (or its only line) with
    ``transform(line)``; a few clients at once."""
    with example.start() as program:
        address = program.address()
        clients = [tcp_connect(address) for _ in range(3)]
        try:
            for n, client in enumerate(clients):
                client.sendall(b"line %d\n" % n)
                client.shutdown(socket.SHUT_WR)
            for n, client in enumerate(clients):
                assert recv_until_eof(client) == transform(b"line %d\n" % n)
        finally:
            for client in clients:
                client.close()
        program.stop()


def check_green_line_server(transform, example):
    """check_line_server for a green server, where green handlers can run:
    greenlet installed (it does not build on free-threaded CPython) and the
    compiled core in use."""
    variants.require_green()
    check_line_server(transform, example)


def check_green_digest(example):
    """docs/green.md's green_blocking.py: the digest comes back, computed
    on a thread, for a line that first sleeps and for one that does not."""
    import hashlib

    variants.require_green()
    with example.start() as program:
        address = program.address()
        for line in (b"wait a moment\n", b"at once\n"):
            expected = hashlib.scrypt(line, salt=b"s", n=2**14, r=8, p=1).hex().encode() + b"\n"
            assert line_roundtrip(address, line) == expected
        program.stop()


def check_http_files(example):
    with open(os.path.join(example.directory, "hello.txt"), "wb") as f:
        f.write(b"hello from a file\n")
    with example.start() as program:
        host, port = program.address()
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        try:
            assert http_get(connection, "/hello.txt") == (200, b"hello from a file\n")
            assert http_get(connection, "/missing.txt")[0] == 404
        finally:
            connection.close()
        program.stop()
    assert '"GET /hello.txt HTTP/1.1" 200' in program.stderr  # http.server's request log


def check_http_hello(example):
    with example.start() as program:
        host, port = program.address()
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        try:
            status, body = http_get(connection, "/one")
            assert (status, json.loads(body)) == (200, {"hello": "/one"})
            first_socket = connection.sock
            status, body = http_get(connection, "/two")
            assert (status, json.loads(body)) == (200, {"hello": "/two"})
            assert connection.sock is first_socket  # kept alive: one connection
            # The keep-alive connection is still open: it must not hold up Ctrl-C.
            program.stop()
        finally:
            connection.close()


def check_prefork(reply_format, stop_signal, returncodes, example):
    """A PreforkMixIn server whose replies say which process served them:
    a worker, never the supervisor; stopping the supervisor stops all."""
    with example.start() as program:
        address = program.address()
        for n in range(4):
            line = b"line %d\n" % n
            reply = line_roundtrip(address, line)
            match = re.fullmatch(reply_format, reply)
            assert match, reply
            assert match.group("line") == line
            assert int(match.group("pid")) != program.pid  # served by a worker
        program.stop(stop_signal, returncodes)  # wait() checks that the workers are gone


def check_line_limits(example):
    """Lines are echoed; one longer than max_line_length ends its connection
    with one log line, and the server serves on."""
    with example.start() as program:
        address = program.address()
        assert line_roundtrip(address, b"one\ntwo\n") == b"one\ntwo\n"
        with tcp_connect(address) as client:
            try:
                client.sendall(b"x" * 70000)
                assert recv_until_eof(client) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass  # the server closed with our bytes unread: a reset
        program.wait_for(r"sent a line longer than 65536 bytes \(Handler.max_line_length\)$",
                         "stderr")
        assert line_roundtrip(address, b"three\n") == b"three\n"
        program.stop()


def check_drain(example):
    """SIGTERM while a request is in flight: its answer still comes, then
    the program ends cleanly."""
    with example.start() as program:
        address = program.address()
        with tcp_connect(address) as client:
            client.sendall(b"job\n")
            program.wait_for(r"^working on b'job\\n'$")
            os.kill(program.pid, signal.SIGTERM)
            assert recv_until_eof(client) == b"job\n"
        program.wait()
    assert program.stdout.endswith("drained\n")


def check_drain_cut(example):
    """SIGTERM while a client keeps its connection open: after the drain's
    deadline the server cuts it (the client sees EOF), and says so."""
    with example.start() as program:
        address = program.address()
        with tcp_connect(address) as client:
            client.sendall(b"still here\n")
            assert client.recv(100) == b"still here\n"  # its handler is running
            os.kill(program.pid, signal.SIGTERM)
            assert recv_until_eof(client) == b""
        program.wait()
    assert program.stdout.endswith("cut 1 connections\n")


def check_tls_lines(transform, example):
    """Lines over TLS; a client speaking plain TCP fails its handshake with
    one log line and the server serves on."""
    example.make_certificate()
    context = example.client_context()
    with example.start() as program:
        address = program.address()
        assert tls_roundtrip(address, b"secret\n", context) == transform(b"secret\n")
        plain_client_at_a_tls_port(address)
        program.wait_for(r"^TLS handshake with 127\.0\.0\.1:\d+ failed: ", "stderr")
        assert tls_roundtrip(address, b"again\n", context) == transform(b"again\n")
        program.stop()


def check_https_files(example):
    example.make_certificate()
    with open(os.path.join(example.directory, "hello.txt"), "wb") as f:
        f.write(b"hello over TLS\n")
    with example.start() as program:
        host, port = program.address()
        connection = http.client.HTTPSConnection(host, port, timeout=TIMEOUT,
                                                 context=example.client_context())
        try:
            assert http_get(connection, "/hello.txt") == (200, b"hello over TLS\n")
        finally:
            connection.close()
        program.stop()


def check_socket_activation(example):
    """Started as systemd starts it, the example serves the socket it was
    passed; started by hand, one it binds itself."""
    listener = socket.create_server((HOST, 0))
    with listener:
        with example.start(inherit=[listener]) as program:
            assert program.address() == listener.getsockname()
            assert line_roundtrip(listener.getsockname(), b"activated\n") == b"activated\n"
            program.stop()
    with example.start() as program:
        address = program.address()
        assert line_roundtrip(address, b"by hand\n") == b"by hand\n"
        program.stop()


def check_tcp_nodelay_off(example):
    with example.start() as program:
        address = program.address()
        assert line_roundtrip(address, b"") == b"TCP_NODELAY is off\n"
        program.stop()


def check_output(expected_stdout, example):
    """A program that runs to its end by itself: what it prints."""
    with example.start() as program:
        program.wait()
    assert program.stdout == expected_stdout
    assert program.stderr == ""


def upper(line):
    return line.upper()


def same(line):
    return line


#: How to drive each example, by the name on its first line.
CHECKS = {
    # README.md
    "quickstart.py": check_quickstart,
    "http_files.py": check_http_files,
    "http_hello.py": check_http_hello,
    "pool_upper.py": functools.partial(check_line_server, upper),
    "green_echo.py": functools.partial(check_green_line_server, same),
    "prefork.py": functools.partial(check_prefork, rb"worker (?P<pid>\d+): (?P<line>.*\n)",
                           signal.SIGINT, CTRL_C_EXITS),
    "limits.py": check_line_limits,
    "drain.py": check_drain,
    "tls_upper.py": functools.partial(check_tls_lines, upper),
    "settings.py": functools.partial(check_output, "16 refuse\n100 30\nNone\n"),
    "activated_echo.py": check_socket_activation,
    # docs/green.md
    "green_blocking.py": check_green_digest,
    # docs/inherited-sockets.md
    "echo_service.py": check_socket_activation,
    # docs/limits.md
    "nagle.py": check_tcp_nodelay_off,
    "limits_echo.py": check_line_limits,
    "drain_idle.py": check_drain_cut,
    # docs/thread-pool.md
    "pool_status.py": functools.partial(check_output, "b'HELLO\\n'\n1\n"),
    # docs/tls.md
    "tls_echo.py": functools.partial(check_tls_lines, same),
    "https_files.py": check_https_files,
    # docs/workers.md: "returns on SIGTERM, once every worker has stopped"
    "prefork_pids.py": functools.partial(check_prefork, rb"(?P<pid>\d+) (?P<line>.*\n)",
                                signal.SIGTERM, (0,)),
}


# ---------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", PROGRAMS, ids=lambda block: block.name or block.where)
def test_example(block, tmp_path):
    assert block.name, (
        "%s: a Python block that is neither named nor a fragment: start it with "
        "'# name.py' and add a check for it to CHECKS in %s, or put %s on the line "
        "before it" % (block.where, os.path.basename(__file__), FRAGMENT_MARK))
    check = CHECKS.get(block.name)
    assert check is not None, "%s: %s has no check in CHECKS (%s)" % (
        block.where, block.name, os.path.basename(__file__))
    compile(block.code, block.name, "exec")
    check(Example(block, tmp_path))


def test_every_check_has_its_example():
    names = {block.name for block in PROGRAMS}
    assert sorted(set(CHECKS) - names) == [], "checks whose example is gone"


def test_example_names_are_unique():
    names = [block.name for block in PROGRAMS if block.name]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert duplicates == []


def test_fragments_compile():
    for block in PYTHON_BLOCKS:
        if block.fragment:
            compile(block.code, block.where, "exec")
