#!/bin/sh
# The compiled reader/writer tests under valgrind's memcheck, since C that
# parses what clients send must be proven clean: no invalid read or write,
# no use of uninitialised memory, no bad free in the core's
# SocketReader/SocketWriter.
#
#   tools/memcheck.sh                         the reader/writer tests (see below)
#   tools/memcheck.sh tests/test_core.py -k waker     other tests (pytest arguments)
#   PYTHON=/path/to/python3.13 tools/memcheck.sh
#
# It runs the checkout's compiled core (the extension built in place, or
# the installed one) with PYTHONMALLOC=malloc, so memcheck sees every
# Python allocation instead of pymalloc's arenas, and with CPython's own
# suppression file (Misc/valgrind-python.supp) when this system has it
# (Debian ships it as /usr/lib/valgrind/python3.supp; set
# VALGRIND_PYTHON_SUPP to point at another copy).  Leak checking is off:
# CPython does not free everything at exit.  Each process (tests may fork)
# logs to $MEMCHECK_WORK/memcheck.<pid>.log; the script fails if an error
# report has a frame in the core, or if the tests fail.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=${MEMCHECK_WORK:-$(mktemp -d /tmp/fastserver-memcheck.XXXXXX)}
mkdir -p "$WORK"
if ! command -v valgrind >/dev/null 2>&1; then
    echo "memcheck.sh: valgrind is not installed" >&2
    exit 2
fi

SUPPRESSIONS=""
for candidate in "${VALGRIND_PYTHON_SUPP:-}" /usr/lib/valgrind/python3.supp \
        /usr/lib/valgrind/python.supp /usr/local/lib/valgrind/python3.supp; do
    if [ -n "$candidate" ] && [ -r "$candidate" ]; then
        SUPPRESSIONS="--suppressions=$candidate"
        echo "memcheck.sh: CPython suppressions from $candidate"
        break
    fi
done
[ -n "$SUPPRESSIONS" ] || echo "memcheck.sh: no CPython suppression file found: running without"

if [ "$#" -eq 0 ]; then
    # The reader/writer tests: the model test, the fuzz corpus and the
    # line limit's reader tests (test_limits.py's "[c]" ones).
    set -- -q tests/test_streams.py tests/test_fuzz_streams.py \
        tests/test_limits.py -k "not test_limits.py or [c]"
fi
rm -f "$WORK"/memcheck.*.log
# The interpreter itself, not a wrapper script (pyenv's shims are shell
# scripts: valgrind would check the shell).
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
"$PYTHON" -c 'import fastserver._core as core; print("memcheck.sh: core under test:", core.__file__)'

status=0
(
    cd "$REPO"
    PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=no \
        --track-origins=yes --num-callers=30 $SUPPRESSIONS \
        --log-file="$WORK/memcheck.%p.log" \
        "$PYTHON" -m pytest -p no:cacheprovider -p no:faulthandler "$@"
) || status=$?

# Errors in CPython itself (this interpreter has some, in code that never
# touches the core: int.from_bytes at start-up, for one) are counted but
# not ours; an error with a frame in the compiled core (its shared object
# or its sources), where it happens or where the memory came from, is.
logs=$(ls "$WORK"/memcheck.*.log 2>/dev/null || true)
if [ -z "$logs" ]; then
    echo "memcheck.sh: valgrind wrote no log" >&2
    exit 2
fi
"$PYTHON" - $logs <<'CLASSIFY' || exit 1
import re, sys

ours, theirs = [], 0
for path in sys.argv[1:]:
    block = []
    for line in open(path, errors="replace"):
        text = re.sub(r"^==\d+== ?", "", line.rstrip("\n"))
        if text.strip():
            block.append(text)
            continue
        if block and block[0].startswith(("Invalid", "Conditional jump", "Use of uninitialised",
                                          "Syscall param", "Mismatched free", "Source and destination",
                                          "Argument", "Invalid free")):
            if any(re.search(r"_core\.(cpython|abi3|so|c\b|pyx)|/core/.*\.pxi", frame) for frame in block):
                ours.append((path, block))
            else:
                theirs += 1
        block = []
print("memcheck.sh: %d error report(s) in CPython itself (outside the core, not counted)" % theirs)
for path, block in ours[:3]:
    print("memcheck.sh: in %s:\n  %s" % (path, "\n  ".join(block)), file=sys.stderr)
if ours:
    print("memcheck.sh: %d error report(s) involve fastserver's core" % len(ours), file=sys.stderr)
    sys.exit(1)
CLASSIFY
if [ "$status" -ne 0 ]; then
    echo "memcheck.sh: the tests failed under valgrind (exit $status); memcheck found no error in the core" >&2
    exit "$status"
fi
echo "memcheck.sh: no memcheck error in fastserver's core; logs in $WORK"
