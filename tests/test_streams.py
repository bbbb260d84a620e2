"""rfile/wfile of the compiled core against the stdlib's makefile() and
_SocketWriter: the same results for the same calls, over many chunkings.

Each reader is checked against a model (the bytes sent): calls whose result
is fixed by io.BufferedIOBase (read(n), read(), readline(limit), readinto,
readlines, iteration) must return exactly the next bytes of the stream;
calls that may legitimately return less (read1, readinto1, peek) must
return a non-empty prefix of what is left.  makefile() is held to the same
model, which proves the model right.
"""
import array
import io
import os
import signal
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastserver import _engine, _streams

core = _engine.compiled_core
pytestmark = pytest.mark.skipif(core is None, reason="compiled core not available")

READERS = {
    "makefile": lambda sock, size: sock.makefile("rb", size),
    "core": lambda sock, size: core.SocketReader(sock, size),
}


def feed(chunks, close=True):
    """A connected socket pair with ``chunks`` sent (then EOF when ``close``)."""
    ours, theirs = socket.socketpair()
    payload = b"".join(chunks)
    for chunk in chunks:
        theirs.sendall(chunk)
    if close:
        theirs.shutdown(socket.SHUT_WR)
    return ours, theirs, payload


ops = st.one_of(
    st.tuples(st.just("read"), st.integers(-1, 300)),
    st.tuples(st.just("read1"), st.integers(-1, 300)),
    st.tuples(st.just("readline"), st.integers(-1, 120)),
    st.tuples(st.just("readinto"), st.integers(0, 300)),
    st.tuples(st.just("readinto1"), st.integers(0, 300)),
    st.tuples(st.just("peek"), st.integers(0, 50)),
    st.tuples(st.just("readlines"), st.integers(-1, 200)),
    st.tuples(st.just("next"), st.just(0)),
)
line_chunks = st.lists(
    st.binary(max_size=200).map(lambda b: b.replace(b"\0", b"\n")), max_size=12
)


def run_against_model(reader, payload, calls):
    position = 0
    for name, arg in calls:
        rest = payload[position:]
        if name == "read":
            got = reader.read(arg)
            want = rest if arg < 0 else rest[:arg]
            assert got == want, (name, arg)
        elif name == "readline":
            got = reader.readline(arg)
            end = rest.find(b"\n") + 1 or len(rest)
            if arg >= 0:
                end = min(end, arg)
            assert got == rest[:end], (name, arg)
        elif name == "readlines":
            lines = reader.readlines(arg)
            got = b"".join(lines)
            assert got == rest[: len(got)]
            assert all(line.endswith(b"\n") for line in lines[:-1])
            if arg <= 0:
                assert got == rest
        elif name == "next":
            got = next(reader, b"")
            end = rest.find(b"\n") + 1 or len(rest)
            assert got == rest[:end]
        elif name == "readinto":
            buffer = bytearray(arg)
            count = reader.readinto(buffer)
            got = bytes(buffer[:count])
            assert got == rest[:arg]
        elif name == "readinto1":
            buffer = bytearray(arg)
            count = reader.readinto1(buffer)
            got = bytes(buffer[:count])
            assert rest.startswith(got) and (got or not rest or arg == 0)
        elif name == "read1":
            got = reader.read1(arg)
            assert rest.startswith(got) and (got or not rest or arg == 0)
            if arg >= 0:
                assert len(got) <= arg
        elif name == "peek":
            got = reader.peek(arg)
            assert rest.startswith(got) and (got or not rest)
            got = b""  # peek does not move
        position += len(got)
    assert reader.read() == payload[position:]


@pytest.mark.parametrize("kind", sorted(READERS))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=line_chunks,
    calls=st.lists(ops, max_size=15),
    size=st.sampled_from([-1, 1, 7, 64, 8192]),
)
def test_reader_follows_the_stream(kind, chunks, calls, size):
    ours, theirs, payload = feed(chunks)
    with ours, theirs:
        reader = READERS[kind](ours, size)
        run_against_model(reader, payload, calls)
        reader.close()


@pytest.mark.parametrize("size", [-1, 1, 16])
def test_long_lines_and_large_reads(size):
    chunks = [b"x" * 100_000 + b"\n", b"y" * 300_000, b"\nend"]
    for kind, make in READERS.items():
        ours, theirs = socket.socketpair()
        def send_all(theirs=theirs):
            theirs.sendall(b"".join(chunks))
            theirs.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_all)
        sender.start()
        with ours, theirs:
            reader = make(ours, size)
            assert reader.readline() == chunks[0], kind
            assert reader.readline(1000) == b"y" * 1000, kind
            assert reader.read(299_000) == b"y" * 299_000, kind
            assert list(reader) == [b"\n", b"end"], kind
            assert reader.read() == b"" and reader.read(5) == b"" and reader.readline() == b""
            sender.join()


def both(make_payload=lambda: [b"abc\n"], close=True, timeout=None):
    for kind, make in READERS.items():
        ours, theirs, _payload = feed(make_payload(), close=close)
        ours.settimeout(timeout)
        yield kind, make(ours, -1), ours, theirs


def test_timeout_then_refuses_to_read():
    for _kind, reader, ours, theirs in both(close=False, timeout=0.05):
        with ours, theirs:
            assert reader.readline() == b"abc\n"
            with pytest.raises(socket.timeout):
                reader.readline()
            with pytest.raises(OSError, match="timed out object"):
                reader.read(1)


def test_non_blocking_socket_returns_none():
    for kind, reader, ours, theirs in both(close=False, timeout=0.0):
        with ours, theirs:
            assert reader.read(4) == b"abc\n", kind
            assert reader.read(4) is None, kind
            assert reader.read() is None, kind
            assert reader.readinto(bytearray(3)) is None, kind
            assert reader.readinto1(bytearray(3)) is None, kind
            assert reader.read1(4) == b"", kind
            assert reader.peek(3) == b"", kind
            assert reader.readline() == b"", kind


def test_timeout_changed_after_creation_is_honoured():
    for _kind, reader, ours, theirs in both(close=False, timeout=None):
        with ours, theirs:
            ours.settimeout(0.05)
            reader.readline()
            with pytest.raises(socket.timeout):
                reader.read(1)


def test_closed_reader():
    for _kind, reader, ours, theirs in both():
        with ours, theirs:
            assert not reader.closed
            assert reader.readable() and not reader.writable() and not reader.seekable()
            assert reader.fileno() == ours.fileno()
            assert reader.mode == "rb" and reader.name == ours.fileno()
            assert isinstance(reader, io.BufferedIOBase)
            reader.close()
            reader.close()
            assert reader.closed
            for call in (reader.read, reader.readline, reader.read1, reader.peek, reader.fileno):
                with pytest.raises(ValueError):
                    call()
            with pytest.raises(ValueError):
                iter(reader)


def test_reader_keeps_the_socket_open_until_closed():
    """makefile() holds a reference: sock.close() waits for the reader."""
    for kind, reader, ours, theirs in both():
        with theirs:
            fd = ours.fileno()
            ours.close()
            assert reader.readline() == b"abc\n", kind  # fd still open
            reader.close()
            with pytest.raises(OSError):
                os.fstat(fd)


def test_reset_by_peer_raises_connection_reset():
    for make in READERS.values():
        ours = socket.create_server(("127.0.0.1", 0))
        with ours:
            client = socket.create_connection(ours.getsockname())
            conn, _ = ours.accept()
            with conn, client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.close()
                time.sleep(0.02)
                reader = make(conn, -1)
                with pytest.raises(ConnectionResetError):
                    reader.read(10)


def test_signal_during_blocking_read_runs_handlers_and_resumes():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    for kind, make in READERS.items():
        seen = []
        old = signal.signal(signal.SIGALRM, lambda *a, seen=seen: seen.append(1))
        ours, theirs = socket.socketpair()
        try:
            threading.Timer(0.2, lambda theirs=theirs: theirs.sendall(b"late\n")).start()
            signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
            reader = make(ours, -1)
            assert reader.readline() == b"late\n", kind
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            ours.close()
            theirs.close()
        assert seen, kind


def test_signal_handler_exception_interrupts_read():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")

    def interrupt(*args):
        raise KeyboardInterrupt

    for make in READERS.values():
        old = signal.signal(signal.SIGALRM, interrupt)
        ours, theirs = socket.socketpair()
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            with pytest.raises(KeyboardInterrupt):
                make(ours, -1).read(1)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            ours.close()
            theirs.close()


WRITERS = {"stdlib": _streams.SocketWriter, "core": lambda sock: core.SocketWriter(sock)}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_writer_matches_socketwriter(kind):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        writer = WRITERS[kind](ours)
        assert isinstance(writer, io.BufferedIOBase)
        assert writer.writable() and not writer.readable() and not writer.seekable()
        assert writer.fileno() == ours.fileno()
        assert writer.write(b"abc") == 3
        assert writer.write(bytearray(b"de")) == 2
        assert writer.write(memoryview(b"xfgx")[1:3]) == 2
        assert writer.write(array.array("i", [1, 2])) == 2 * array.array("i").itemsize
        writer.writelines([b"h", b"ij"])
        writer.flush()
        theirs.settimeout(5)
        expected = b"abcdefg" + array.array("i", [1, 2]).tobytes() + b"hij"
        got = b""
        while len(got) < len(expected):
            got += theirs.recv(100)
        assert got == expected
        with pytest.raises(TypeError):
            writer.write("text")
        writer.close()
        assert writer.closed
        with pytest.raises(ValueError):
            writer.flush()
        with pytest.raises(ValueError):
            writer.writelines([b"x"])


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_writer_large_payload_and_timeout(kind):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        writer = WRITERS[kind](ours)
        payload = os.urandom(4_000_000)
        received = []

        def receive():
            received.append(_recv_exactly(theirs, len(payload)))

        reader = threading.Thread(target=receive)
        reader.start()
        assert writer.write(payload) == len(payload)
        reader.join(10)
        assert received == [payload]
        # Nobody reads now: the send buffer fills and sendall times out.
        ours.settimeout(0.05)
        with pytest.raises(socket.timeout):
            writer.write(b"z" * 10_000_000)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_writer_to_a_closed_peer_raises_broken_pipe(kind):
    ours, theirs = socket.socketpair()
    with ours:
        theirs.close()
        writer = WRITERS[kind](ours)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                writer.write(b"x" * 65536)


def _recv_exactly(sock, size):
    chunks, total = [], 0
    sock.settimeout(10)
    while total < size:
        chunk = sock.recv(min(1 << 20, size - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
