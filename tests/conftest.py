"""Shared fixtures: every behaviour is written once and run against the
stdlib ``socketserver`` (the reference) and every fastserver engine.

The ``ss`` fixture yields the module under test.  Its parameters:

- ``stdlib``   -- CPython's own socketserver, the reference behaviour;
- ``c-epoll``  -- fastserver with the compiled core, native poller
                  (epoll on Linux, kqueue on BSD/macOS);
- ``c-poll``   -- fastserver with the compiled core forced onto poll(2);
- ``py``       -- fastserver with the pure-Python twin core.

Variants that cannot run here (no compiled core) are skipped, and the build
test in test_build.py fails loudly in that case unless the twin was asked
for with FASTSERVER_NO_EXTENSIONS=1.
"""
import os
import socketserver

import pytest

import fastserver
from fastserver import _engine

VARIANTS = ["stdlib", "c-epoll", "c-poll", "py"]

#: The survival battery and the workers' tests watch other processes' fds,
#: threads, children and RSS through /proc (and test_faults injects errors
#: with an LD_PRELOAD shim): Linux's.  Where there is no /proc (macOS and
#: the BSDs, which the wheels workflow tests), they are not collected.
PROC_MODULES = ["test_faults.py", "test_hostile.py", "test_leaks.py", "test_workers.py"]
if not os.path.isdir("/proc/self/task"):
    collect_ignore = PROC_MODULES


def _configure(variant, monkeypatch, request):
    if variant == "stdlib":
        return socketserver
    if variant.startswith("c-"):
        if _engine.compiled_core is None:
            pytest.skip("compiled core not available")
        core = _engine.compiled_core
        if variant == "c-poll":
            monkeypatch.setenv("FASTSERVER_POLLER", "poll")
        else:
            monkeypatch.delenv("FASTSERVER_POLLER", raising=False)
    else:
        core = _engine.python_core
        monkeypatch.delenv("FASTSERVER_POLLER", raising=False)
    # The engine's switch takes the whole core (loop, poller, waker and the
    # handlers' steps); the test's end switches back.
    previous = _engine.core
    _engine.use_core(core)
    request.addfinalizer(lambda: _engine.use_core(previous))
    return fastserver


@pytest.fixture(params=VARIANTS)
def ss(request, monkeypatch):
    """The socketserver-compatible module under test."""
    return _configure(request.param, monkeypatch, request)


@pytest.fixture(params=VARIANTS[1:])
def fs(request, monkeypatch):
    """fastserver only (for behaviour the stdlib does not have)."""
    return _configure(request.param, monkeypatch, request)


@pytest.fixture
def variant(request):
    """The name of the variant of the current ``ss``/``fs`` parameter."""
    return request.node.callspec.params.get("ss") or request.node.callspec.params.get("fs")

