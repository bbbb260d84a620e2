"""CPython's own Lib/test/test_socketserver.py, run against fastserver.

The running interpreter's copy of the test module is copied into a temporary
directory with the module it tests renamed, and run with ``python -m
unittest`` in a child process whose environment (variants.child_env) selects
the variant: FASTSERVER_NO_EXTENSIONS=1 for the twin, FASTSERVER_POLLER=poll
for the compiled core on poll(2).  Every test must pass.

The module's name is written twice in the test: in ``import socketserver``,
which becomes ``import fastserver as socketserver``, and in
MiscTestCase.test_all, which compares ``__all__`` with the public objects
whose ``__module__`` is ``'socketserver'``; that literal becomes
``socketserver.__name__``.  fastserver's public classes name themselves
``fastserver`` (``__init__.py``); claiming ``'socketserver'`` instead would
make pickle find the stdlib's classes under their names, or none.
"""
import importlib.util
import re
import subprocess
import sys

import pytest

import variants

#: The two places the test module names the module it tests, as exact lines
#: (pattern, replacement); each must occur exactly once.
RENAMES = (
    (r"^import socketserver$", "import fastserver as socketserver"),
    (r"^(\s+if getattr\(mod_object, '__module__', None\) == )'socketserver':$",
     r"\1socketserver.__name__:"),
)

SUBPROCESS_TIMEOUT = 600


def cpython_test_source():
    try:
        spec = importlib.util.find_spec("test.test_socketserver")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        pytest.skip("CPython's test.test_socketserver is not installed")
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def run_unittest(tmp_path, modname, source, env):
    (tmp_path / (modname + ".py")).write_text(source, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "unittest", "-v", modname],
        cwd=str(tmp_path),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=SUBPROCESS_TIMEOUT,
        text=True,
    )
    return proc.returncode, proc.stdout


_HEADER = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (\w+) \(([\w.]+)\)", re.M)


def failed_tests(output):
    """{"Class.test": kind} from unittest's FAIL:/ERROR: section headers.

    Handles both the 3.11+ form "test_x (mod.Class.test_x)" and the older
    "test_x (mod.Class)".
    """
    failed = {}
    for kind, name, where in _HEADER.findall(output):
        parts = where.split(".")
        if parts and parts[-1] == name:
            parts = parts[:-1]
        cls = parts[-1] if parts else "?"
        failed["%s.%s" % (cls, name)] = kind
    return failed


def check_result(returncode, output):
    tail = output[-6000:]
    ran = re.search(r"^Ran (\d+) tests? in ", output, re.M)
    assert ran, "unittest did not run:\n" + tail
    assert int(ran.group(1)) >= 20, "too few tests ran:\n" + tail
    failed = failed_tests(output)
    assert not failed, "CPython tests failing: %s\n%s" % (sorted(failed), tail)
    assert returncode == 0, tail
    assert re.search(r"^OK\b", output, re.M), tail


def test_cpython_suite_baseline_stdlib(tmp_path):
    """The unmodified suite passes on the stdlib here: failures below are
    fastserver's, not the environment's."""
    source = cpython_test_source()
    env = variants.child_env("stdlib")
    returncode, output = run_unittest(tmp_path, "test_socketserver_stdlib", source, env)
    check_result(returncode, output)


CORE_PROBE = r"""
import fastserver
from fastserver import _engine
backend = "unknown"
try:
    poller = _engine.core.Poller()
    backend = poller.backend
    poller.close()
except Exception:
    pass
print(fastserver.CORE_IMPLEMENTATION, _engine.core is _engine.python_core, backend)
"""


def test_cpython_suite_on_fastserver(fs, variant, tmp_path):
    source = cpython_test_source()
    patched = source
    for pattern, replacement in RENAMES:
        patched, n = re.subn(pattern, replacement, patched, flags=re.M)
        assert n == 1, "expected exactly one line matching %r in the CPython test module" % pattern
    env = variants.child_env(variant)

    # The child's environment selects the intended core.
    probe = subprocess.run(
        [sys.executable, "-c", CORE_PROBE],
        env=env,
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
        text=True,
    )
    assert probe.returncode == 0, probe.stdout
    implementation, is_python, backend = probe.stdout.split()[-3:]
    if variant == "py":
        assert (implementation, is_python) == ("python", "True"), probe.stdout
    else:
        assert (implementation, is_python) == ("c", "False"), probe.stdout
        if variant == "c-poll" and backend != "unknown":
            assert backend == "poll", probe.stdout

    modname = "test_socketserver_fastserver"
    returncode, output = run_unittest(tmp_path, modname, patched, env)
    check_result(returncode, output)
