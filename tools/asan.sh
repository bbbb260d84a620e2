#!/bin/sh
# The whole test suite against a build of the compiled core with
# AddressSanitizer, so that a memory error in C code that parses what
# clients send shows up as a report, not as a rare crash in production.
#
#   tools/asan.sh [pytest arguments]          e.g. tools/asan.sh -q  (the whole suite)
#   tools/asan.sh -q tests/test_streams.py    some of it
#   PYTHON=/path/to/python3.13 tools/asan.sh  another interpreter
#
# The core is built with -fsanitize=address in a copy of the sources under
# $ASAN_WORK (default: a new /tmp/fastserver-asan.XXXXXX), never in the
# checkout: the in-place extension the others use is left alone.  The suite
# of the checkout (pytest started in the checkout) then runs with that copy first on PYTHONPATH, the ASan
# runtime preloaded (an uninstrumented python needs it loaded first),
# PYTHONMALLOC=malloc (so ASan sees Python objects' memory too, not pymalloc
# arenas) and detect_leaks=0 (CPython does not free everything at exit).
# FASTSERVER_SANITIZER=address tells the tests (test_leaks.py skips its RSS
# check: ASan's quarantine holds freed memory on purpose).
# Every process of the run (the suite forks and starts children) writes its
# reports to $ASAN_WORK/report.<pid>; the script fails if there is any, or
# if the suite fails.  Needs gcc (or cc with libasan), Cython and setuptools
# in $PYTHON's environment.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
CC=${CC:-gcc}
WORK=${ASAN_WORK:-$(mktemp -d /tmp/fastserver-asan.XXXXXX)}
mkdir -p "$WORK"
LIBASAN=$("$CC" -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "asan.sh: $CC has no libasan.so" >&2
    exit 2
fi

# The interpreter itself, not a wrapper script such as pyenv's shims.
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')

echo "asan.sh: building the core with AddressSanitizer in $WORK"
rm -rf "$WORK/src" "$WORK/build" "$WORK"/report.*
mkdir -p "$WORK/src"
cp -R "$REPO/src/fastserver" "$REPO/src/_core.pyx" "$REPO/src/core" "$REPO/src/includes" "$WORK/src/"
cp "$REPO/setup.py" "$REPO/pyproject.toml" "$WORK/"
rm -f "$WORK"/src/fastserver/_core*.so "$WORK"/src/_core.c
(
    cd "$WORK"
    CC="$CC" \
    CFLAGS="-fsanitize=address -fno-omit-frame-pointer -fno-common -g -O1" \
    LDFLAGS="-fsanitize=address" \
        "$PYTHON" setup.py -q build_ext --inplace --build-temp "$WORK/build" >"$WORK/build.log" 2>&1
) || { cat "$WORK/build.log" >&2; echo "asan.sh: the build failed" >&2; exit 2; }
CORE=$(ls "$WORK"/src/fastserver/_core*.so)
if ! nm -D "$CORE" | grep -q __asan_report; then
    echo "asan.sh: $CORE is not instrumented" >&2
    exit 2
fi

echo "asan.sh: running the suite ($PYTHON) with $LIBASAN preloaded"
status=0
env \
    LD_PRELOAD="$LIBASAN${LD_PRELOAD:+ $LD_PRELOAD}" \
    ASAN_OPTIONS="detect_leaks=0:log_path=$WORK/report:abort_on_error=0:halt_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
    PYTHONMALLOC=malloc \
    PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -c '
import sys, fastserver, fastserver._core as core
assert core.__file__.startswith(sys.argv[1]), core.__file__
print("asan.sh: core under test:", core.__file__)
' "$WORK/src" || exit 2
env \
    LD_PRELOAD="$LIBASAN${LD_PRELOAD:+ $LD_PRELOAD}" \
    ASAN_OPTIONS="detect_leaks=0:log_path=$WORK/report:abort_on_error=0:halt_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
    PYTHONMALLOC=malloc \
    FASTSERVER_SANITIZER=address \
    PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}" \
    sh -c 'cd "$0" && exec "$@"' "$REPO" "$PYTHON" -m pytest -p no:cacheprovider "$@" || status=$?

if ls "$WORK"/report.* >/dev/null 2>&1; then
    echo "asan.sh: AddressSanitizer reports:" >&2
    cat "$WORK"/report.* >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "asan.sh: the suite failed under ASan (exit $status); no ASan report" >&2
    exit "$status"
fi
echo "asan.sh: no AddressSanitizer report; the suite passed"
