"""Fuzz the compiled core's rfile/wfile against the stdlib: a reader and a
writer in C must not differ from io's on any input the network can send.

Each case is a byte stream (in chunks), how it arrives (chunk by chunk to a
blocking reader, or all at once to a reader with a timeout or a
non-blocking one, with or without EOF), the reader's buffer size and line
limit, and a sequence of calls (read, read1, readinto, readinto1, peek,
readline, readlines, iteration, close).  The same case runs on three
readers over real socket pairs:

- ``fastserver._core.SocketReader`` (the compiled rfile), the one under test;
- ``sock.makefile('rb', bufsize)``, the stdlib's reader, the reference;
- the twin's reader (``fastserver._streams.open_reader``), the reference
  for the line limit (max_line_length), which the stdlib does not have.

Every result is checked against a model of the stream (what
io.BufferedIOBase promises: the next bytes, a non-empty prefix for read1/
peek, None from a non-blocking socket with nothing, a timeout when the data
runs out, LineTooLong past the limit).  A case is a finding when the
compiled reader breaks the model where the reference keeps it; a case the
reference breaks too is a flaw of the model, reported but not kept.  The
writer (``SocketWriter``) is checked the same way against the stdlib's
``_SocketWriter``: the bytes that arrive and the exceptions.

Findings are saved as JSON in tests/fuzz_corpus/, which
tests/test_fuzz_streams.py replays on every test run.

    python tools/fuzz.py --seconds 600              # atheris if installed, else Hypothesis
    python tools/fuzz.py --engine hypothesis --seconds 60
    python tools/fuzz.py --replay tests/fuzz_corpus  # run the saved cases

atheris (libFuzzer) mutates the raw bytes a case is decoded from; without
clang the compiled core carries no coverage instrumentation, so it is
driven by the Python-level coverage of this harness and by mutation alone.
libFuzzer ends the process itself; its last line ("Done N runs in S
second(s)") is the summary.  The Hypothesis engine prints its own.
"""
import argparse
import array
import glob
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "tests", "fuzz_corpus")

#: How the stream reaches the reader: "stream" -- chunk by chunk, then EOF,
#: to a blocking reader; "stall-eof" / "stall-open" -- all at once, then
#: EOF or not, to a reader with a timeout (TIMEOUT) or a non-blocking one.
DELIVERIES = ("stream", "stall-eof", "stall-open")
TIMEOUT = 0.01
OPS = ("read", "read1", "readinto", "readinto1", "peek", "readline", "readlines", "next",
       "close")
BUFFER_KINDS = ("bytearray", "memoryview", "array-b", "array-i", "strided")


class Finding(AssertionError):
    """The compiled reader or writer broke the model where the stdlib did not."""


class ModelError(AssertionError):
    """A result broke the model: raised per reader; sorted out by run_case."""


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def case_from_bytes(data):
    """A case decoded from raw fuzzer input (atheris mutates these bytes)."""
    import atheris

    fdp = atheris.FuzzedDataProvider(data)
    chunks = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
              for _ in range(fdp.ConsumeIntInRange(0, 6))]
    # Newlines matter: make them frequent.
    chunks = [chunk.replace(b"\0", b"\n") for chunk in chunks]
    case = {
        "chunks": [chunk.hex() for chunk in chunks],
        "delivery": DELIVERIES[fdp.ConsumeIntInRange(0, len(DELIVERIES) - 1)],
        "timeout": (None, 0.0, TIMEOUT)[fdp.ConsumeIntInRange(0, 2)],
        "bufsize": (-1, 1, 2, 3, 7, 16, 64, 8192)[fdp.ConsumeIntInRange(0, 7)],
        "max_line": (None, None, 1, 2, 5, 16, 100)[fdp.ConsumeIntInRange(0, 6)],
        "ops": [],
    }
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        name = OPS[fdp.ConsumeIntInRange(0, len(OPS) - 1)]
        arg = fdp.ConsumeIntInRange(-1, 130)
        kind = BUFFER_KINDS[fdp.ConsumeIntInRange(0, len(BUFFER_KINDS) - 1)]
        case["ops"].append([name, arg, kind])
    return normalise(case)


def hypothesis_cases():
    """The same space of cases as a Hypothesis strategy."""
    from hypothesis import strategies as st

    chunk = st.binary(max_size=64).map(lambda b: b.replace(b"\0", b"\n").hex())
    op = st.tuples(st.sampled_from(OPS), st.integers(-1, 130),
                   st.sampled_from(BUFFER_KINDS)).map(list)
    return st.fixed_dictionaries({
        "chunks": st.lists(chunk, max_size=6),
        "delivery": st.sampled_from(DELIVERIES),
        "timeout": st.sampled_from([None, 0.0, TIMEOUT]),
        "bufsize": st.sampled_from([-1, 1, 2, 3, 7, 16, 64, 8192]),
        "max_line": st.sampled_from([None, None, 1, 2, 5, 16, 100]),
        "ops": st.lists(op, max_size=12),
    }).map(normalise)


def normalise(case):
    """Make a case runnable: a "stream" delivery reads with no timeout (it
    ends in EOF); a "stall-*" one with a timeout or none at all."""
    if case["delivery"] == "stream":
        case["timeout"] = None
    elif case["timeout"] is None:
        case["timeout"] = TIMEOUT
    if case["timeout"] is not None:
        case["max_line"] = None  # the line limit is checked on blocking readers
    return case


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

TIMED_OUT = "timeout"


class Stream:
    """What the reader should see: the bytes, how far it has read, whether
    EOF follows, and whether the socket is non-blocking."""

    def __init__(self, case):
        self.data = b"".join(bytes.fromhex(chunk) for chunk in case["chunks"])
        self.position = 0
        self.eof = case["delivery"] != "stall-open"
        self.non_blocking = case["timeout"] == 0.0
        self.max_line = case["max_line"]
        self.closed = False

    @property
    def rest(self):
        return self.data[self.position:]

    def short(self, available):
        """What a call that wants more than ``available`` gets: the bytes at
        EOF; on a non-blocking socket those or None; else a timeout."""
        if self.eof:
            return available
        if self.non_blocking:
            return available if available else None
        return TIMED_OUT

    def line(self, limit):
        """readline(limit)'s result, or TIMED_OUT, or ("too long", data)
        for a line past max_line when there is no limit."""
        rest = self.rest
        bounded = limit < 0 and self.max_line is not None
        cap = self.max_line if bounded else limit
        end = rest.find(b"\n") + 1
        if end and (cap < 0 or end <= cap):
            return rest[:end]
        if cap >= 0 and len(rest) >= cap:
            return ("too long", rest[:cap]) if bounded else rest[:cap]
        if self.eof or self.non_blocking:
            return rest
        return TIMED_OUT


def make_buffer(kind, size):
    size = max(0, size)
    if kind == "memoryview":
        return memoryview(bytearray(size + 2))[1:size + 1]
    if kind == "array-b":
        return array.array("b", bytes(size))
    if kind == "array-i":
        return array.array("i", [0] * (size // 4))
    if kind == "strided" and size >= 2:  # one element or none is contiguous all the same
        return memoryview(bytearray(2 * size))[::2]
    return bytearray(size)


def check(condition, *what):
    if not condition:
        raise ModelError(*what)


def apply(reader, model, name, arg, kind):
    """Run one call on ``reader`` and check it against ``model``.  Returns
    False once the case has to stop (a timeout ends it: what a reader
    keeps after one is documented to differ)."""
    rest = model.rest
    if name == "close":  # again and again: a no-op after the first
        reader.close()
        model.closed = True
        return True
    if model.closed:
        try:
            call(reader, name, arg, kind)
        except (ValueError, TypeError):  # closed, or a bad buffer checked first
            return True
        raise ModelError(name, "on a closed reader did not raise ValueError")
    if name in ("readinto", "readinto1") and kind == "strided" and arg >= 2:
        # A non-contiguous buffer: both readers must refuse it, the same way.
        try:
            call(reader, name, arg, kind)
        except (TypeError, ValueError, BufferError) as exc:
            model.refusal = type(exc).__name__
            return True
        raise ModelError(name, "accepted a non-contiguous buffer")
    expected = expectation(model, name, arg, kind)
    try:
        got = call(reader, name, arg, kind)
    except socket.timeout:
        # read1/readinto1 may read the socket even with bytes buffered (the
        # stdlib's readinto1 does, for a request larger than its buffer):
        # with no EOF coming that is a timeout too.
        may_wait = name in ("read1", "readinto1") and not model.eof and not model.non_blocking
        check(expected == TIMED_OUT or may_wait, name, arg, "timed out; expected", expected)
        return False
    except ValueError as exc:
        if type(exc).__name__ != "LineTooLong":
            raise
        check(isinstance(expected, tuple), name, arg, "raised LineTooLong; expected", expected)
        check(exc.data == expected[1], name, arg, "LineTooLong.data", exc.data, expected[1])
        lines_lost = expected[2] if len(expected) > 2 else 0
        model.position += lines_lost + len(exc.data)
        return True
    check(expected != TIMED_OUT and not isinstance(expected, tuple),
          name, arg, "returned", got, "expected", expected)
    if name in ("read1", "peek", "readinto1"):
        data = got
        if name == "readinto1":
            data = None if got is None else bytes(memoryview(call.last_buffer).cast("B")[:got])
        limit = arg if name != "readinto1" else len(memoryview(call.last_buffer).cast("B"))
        if expected is None:  # nothing there: nothing back
            check(data in (None, b""), name, arg, "returned", data, "with nothing to read")
        else:
            check(data is not None and rest.startswith(data),
                  name, arg, data, "not a prefix of", rest)
            check(data or not rest or limit == 0, name, arg, "returned nothing; there is", rest)
            if name == "read1" and arg >= 0:
                check(len(data) <= arg, name, arg, "returned", len(data), "bytes")
        if name != "peek" and data:
            model.position += len(data)
        return True
    if name == "readinto":
        data = None if got is None else bytes(memoryview(call.last_buffer).cast("B")[:got])
        check(data == expected, name, arg, "read", data, "expected", expected)
        model.position += len(data or b"")
        return True
    if name == "readlines":
        check(got == expected, name, arg, "returned", got, "expected", expected)
        model.position += sum(len(line) for line in got)
        return True
    check(got == expected, name, arg, "returned", got, "expected", expected)
    model.position += len(got or b"")
    return True


def expectation(model, name, arg, kind):
    rest = model.rest
    if name == "read":
        if arg == 0:
            return b""
        if 0 < arg <= len(rest):
            return rest[:arg]
        return model.short(rest)
    if name in ("readline", "next"):
        line = model.line(arg if name == "readline" else -1)
        return line
    if name == "readinto":
        size = len(memoryview(make_buffer(kind, arg)).cast("B"))
        if size == 0:
            return b""
        if size <= len(rest):
            return rest[:size]
        return model.short(rest)
    if name == "readlines":
        # readline() with no size until b"" or ``arg`` bytes; a line past
        # max_line raises LineTooLong, and the lines before it are gone too.
        lines, start = [], model.position
        while True:
            model.position, line = start + sum(map(len, lines)), None
            line = model.line(-1)
            model.position = start
            if line == TIMED_OUT:
                return TIMED_OUT
            if isinstance(line, tuple):
                return line + (sum(map(len, lines)),)
            if not line:
                return lines
            lines.append(line)
            if 0 < arg < sum(map(len, lines)):  # io: stop once the total *exceeds* the hint
                return lines
    # read1, peek, readinto1: a prefix; with nothing to read, what short() says
    if rest:
        return b""
    if (name == "read1" and arg == 0) or (
            name == "readinto1" and len(memoryview(make_buffer(kind, arg)).cast("B")) == 0):
        return b""  # nothing asked: no read at all
    if model.eof:
        return b""
    return None if model.non_blocking else TIMED_OUT


def call(reader, name, arg, kind):
    if name == "next":
        return next(reader, b"")
    if name in ("readinto", "readinto1"):
        call.last_buffer = make_buffer(kind, arg)
        return getattr(reader, name)(call.last_buffer)
    if name == "peek":
        return reader.peek(max(0, arg))
    return getattr(reader, name)(arg)


# ---------------------------------------------------------------------------
# Running a case
# ---------------------------------------------------------------------------


def readers():
    """name -> factory(sock, bufsize, max_line) of the readers here."""
    from fastserver import _engine, _streams

    made = {"stdlib": lambda sock, size, max_line: sock.makefile("rb", size),
            "twin": lambda sock, size, max_line: _streams.open_reader(sock, size, max_line)}
    if _engine.compiled_core is not None:
        core = _engine.compiled_core
        made["core"] = lambda sock, size, max_line: core.SocketReader(sock, size, max_line)
    return made


def run_reader(make, case):
    """Run ``case`` on one reader; raises ModelError at the first broken
    promise."""
    ours, theirs = socket.socketpair()
    chunks = [bytes.fromhex(chunk) for chunk in case["chunks"]]
    feeder = None
    try:
        if case["delivery"] == "stream":
            def feed():
                for chunk in chunks:
                    theirs.sendall(chunk)
                    time.sleep(0.0002)  # let the reader see this chunk alone
                theirs.shutdown(socket.SHUT_WR)
            feeder = threading.Thread(target=feed)
            feeder.start()
        else:
            theirs.sendall(b"".join(chunks))
            if case["delivery"] == "stall-eof":
                theirs.shutdown(socket.SHUT_WR)
        ours.settimeout(case["timeout"])
        model = Stream(case)
        reader = make(ours, case["bufsize"], case["max_line"])
        refusals = []
        for name, arg, kind in case["ops"]:
            model.refusal = None
            if not apply(reader, model, name, arg, kind):
                return refusals
            refusals.append(model.refusal)
        if not model.closed and model.eof:
            rest = reader.read()
            check(rest == model.rest, "the final read() returned", rest, "expected", model.rest)
        reader.close()
        return refusals
    finally:
        if feeder is not None:
            feeder.join()
        ours.close()
        theirs.close()


def run_case(case, subject="core"):
    """Check ``case`` on the compiled reader (``subject="twin"``: on the
    twin's).  Raises Finding if it breaks the model where the reference
    (the stdlib, or the twin for the compiled core's line limit) keeps it,
    ModelError if the reference breaks it too."""
    made = readers()
    if subject not in made:
        raise RuntimeError("the compiled core is not built")
    reference = "stdlib" if case["max_line"] is None else "twin"
    expected_refusals = None
    if reference != subject:
        try:
            expected_refusals = run_reader(made[reference], case)
        except ModelError as exc:
            raise ModelError("the reference (%s) breaks the model: %s" % (reference, exc)) from None
    label = "core SocketReader" if subject == "core" else "twin reader"
    try:
        refusals = run_reader(made[subject], case)
    except ModelError as exc:
        raise Finding("%s: %s" % (label, exc)) from None
    except Exception as exc:  # an exception the reference did not raise
        raise Finding("%s raised %r" % (label, exc)) from None
    for ours, theirs in zip(refusals, expected_refusals or refusals):
        if ours != theirs:
            raise Finding("%s refused a non-contiguous buffer with %s, the reference with %s"
                          % (label, ours, theirs))
    if subject == "core":
        run_writer_case(case)


def run_writer_case(case):
    """The chunks written through the core's SocketWriter and the stdlib's
    _SocketWriter, as bytes, memoryviews and arrays: the same bytes arrive,
    the same count is returned; after the peer has gone, both raise."""
    from fastserver import _engine, _streams

    core = _engine.compiled_core
    outcomes = {}
    for name, make in (("stdlib", _streams.SocketWriter), ("core", core.SocketWriter)):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            writer = make(ours)
            counts = []
            for index, chunk in enumerate(bytes.fromhex(c) for c in case["chunks"]):
                kind = BUFFER_KINDS[index % 4]  # not "strided": sendall takes any buffer
                data = chunk if kind == "bytearray" else make_writable(kind, chunk)
                counts.append(writer.write(data))
            ours.shutdown(socket.SHUT_WR)
            theirs.settimeout(5)
            received = receive_all(theirs)
            theirs.close()
            try:
                for _ in range(64):
                    writer.write(b"x" * 65536)
                after_close = "wrote"
            except OSError as exc:
                after_close = type(exc).__name__
            outcomes[name] = (counts, received, after_close)
    if outcomes["core"] != outcomes["stdlib"]:
        raise Finding("core SocketWriter: %r, stdlib: %r" % (outcomes["core"], outcomes["stdlib"]))


def receive_all(sock):
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def make_writable(kind, chunk):
    if kind == "memoryview":
        return memoryview(b"<" + chunk + b">")[1:-1]
    if kind == "array-b":
        return array.array("b", chunk)
    if kind == "array-i":
        return array.array("i", chunk[: len(chunk) // 4 * 4])
    return chunk


# ---------------------------------------------------------------------------
# The corpus and the engines
# ---------------------------------------------------------------------------


def case_name(case):
    return hashlib.sha1(json.dumps(case, sort_keys=True).encode()).hexdigest()[:16]


def save_finding(case, error, corpus=CORPUS):
    os.makedirs(corpus, exist_ok=True)
    path = os.path.join(corpus, "finding-%s.json" % case_name(case))
    with open(path, "w") as f:
        json.dump({"case": case, "found": str(error)}, f, indent=1, sort_keys=True)
        f.write("\n")
    return path


def load_corpus_entries(corpus=CORPUS):
    """(file name, entry) for every saved case: an entry is ``{"case": ...,
    "found": what went wrong}``, plus ``"xfail": why`` while the bug it
    found is not fixed."""
    for path in sorted(glob.glob(os.path.join(corpus, "*.json"))):
        with open(path) as f:
            yield os.path.basename(path), json.load(f)


def load_corpus(corpus=CORPUS):
    """(file name, case) for every saved case."""
    for name, entry in load_corpus_entries(corpus):
        yield name, entry["case"]


def finding_signature(exc):
    """What tells two findings apart: the reader, the call and what went
    wrong (not the data), so one bug is saved once."""
    text = str(exc)
    match = re.match(r"([\w ]+): \('(\w+)', -?\d+, '([^']*)'", text)
    return match.groups() if match else text[:80]


class Tally:
    def __init__(self):
        self.cases = self.findings = self.model_errors = 0
        self.seen = set()

    def run(self, case, corpus):
        self.cases += 1
        try:
            run_case(case)
        except ModelError as exc:
            self.model_errors += 1
            print("MODEL", exc, json.dumps(case), flush=True)
        except Exception as exc:  # a Finding, or the harness failed: kept either way
            signature = finding_signature(exc)
            if signature not in self.seen:  # one file per distinct failure
                self.seen.add(signature)
                self.findings += 1
                print("FINDING", save_finding(case, exc, corpus), exc, flush=True)


def fuzz_with_atheris(seconds, corpus, tally):
    import atheris

    def one_input(data):
        tally.run(case_from_bytes(data), corpus)

    # Coverage of the Python code here and of the twin guides libFuzzer's
    # mutations; the compiled core has none without clang's instrumentation.
    readers()
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], "-max_total_time=%d" % seconds, "-max_len=1024",
                   "-rss_limit_mb=4096"], one_input)
    atheris.Fuzz()


def fuzz_with_hypothesis(seconds, corpus, tally):
    """Batches of 200 generated cases, each batch a fresh random run, until
    ``seconds`` have passed.  Failures are tallied, never raised, so
    Hypothesis does not stop to shrink them: a saved case is small already."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(hypothesis_cases())
    def one_batch(case):
        tally.run(case, corpus)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        one_batch()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default 60)")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--corpus", default=CORPUS, help="where findings are saved")
    parser.add_argument("--replay", metavar="DIR", help="run the saved cases of DIR and exit")
    args = parser.parse_args(argv)
    if args.replay:
        failed = 0
        for name, case in load_corpus(args.replay):
            try:
                run_case(case)
                print("ok  ", name)
            except AssertionError as exc:
                failed += 1
                print("FAIL", name, exc)
        return 1 if failed else 0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    tally = Tally()
    start = time.monotonic()
    try:
        (fuzz_with_atheris if engine == "atheris" else fuzz_with_hypothesis)(
            args.seconds, args.corpus, tally)
    finally:
        elapsed = time.monotonic() - start
        print("fuzz.py: %s, %d cases in %.0f s (%.0f/s), %d findings, %d model errors"
              % (engine, tally.cases, elapsed, tally.cases / max(elapsed, 1e-9),
                 tally.findings, tally.model_errors), flush=True)
    return 1 if tally.findings else 0


if __name__ == "__main__":
    sys.exit(main())
