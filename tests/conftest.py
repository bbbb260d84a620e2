"""Fixtures: every behaviour is written once and run against the stdlib's
``socketserver`` (the reference) and every fastserver variant.

The variants, and how to select one in this process or in a child, are
defined in variants.py; this file only makes fixtures of them.  Each
fixture below yields the module under test (``socketserver`` or
``fastserver``, with the variant's core selected for the test), with the
variant's name as the parameter's id:

- ``ss``        -- stdlib, c-epoll, c-poll, py (variants.ALL);
- ``fs``        -- c-epoll, c-poll, py: behaviour the stdlib does not have;
- ``ss_native`` -- stdlib, c-epoll, py: each core on its native poller,
                   and the reference (see variants.NATIVE for when);
- ``fs_native`` -- c-epoll, py;
- ``variant``   -- the name of the current parameter of any of them (for a
                   child process: variants.child_env(variant)).

Variants that cannot run here (no compiled core) are skipped, and the build
test in test_build.py fails loudly in that case unless the twin was asked
for with FASTSERVER_NO_EXTENSIONS=1.
"""
import os

import pytest

import variants

#: The survival battery and the workers' tests watch other processes' fds,
#: threads, children and RSS through /proc (and test_faults injects errors
#: with an LD_PRELOAD shim): Linux's.  Where there is no /proc (macOS and
#: the BSDs, which the wheels workflow tests), they are not collected.
PROC_MODULES = ["test_faults.py", "test_hostile.py", "test_leaks.py", "test_workers.py"]
if not os.path.isdir("/proc/self/task"):
    collect_ignore = PROC_MODULES

#: The fixtures that select a variant (the ``variant`` fixture names theirs).
VARIANT_FIXTURES = ("ss", "fs", "ss_native", "fs_native")


@pytest.fixture(params=variants.ALL)
def ss(request, monkeypatch):
    """The socketserver-compatible module under test."""
    with variants.selected(request.param, monkeypatch) as module:
        yield module


@pytest.fixture(params=variants.FASTSERVER)
def fs(request, monkeypatch):
    """fastserver only (for behaviour the stdlib does not have)."""
    with variants.selected(request.param, monkeypatch) as module:
        yield module


@pytest.fixture(params=variants.REFERENCE_AND_NATIVE)
def ss_native(request, monkeypatch):
    """The stdlib, or fastserver on each core with its native poller."""
    with variants.selected(request.param, monkeypatch) as module:
        yield module


@pytest.fixture(params=variants.NATIVE)
def fs_native(request, monkeypatch):
    """fastserver on each core with its native poller."""
    with variants.selected(request.param, monkeypatch) as module:
        yield module


@pytest.fixture
def variant(request):
    """The name of the variant the test runs on (the parameter of whichever
    of VARIANT_FIXTURES it uses)."""
    params = getattr(request.node, "callspec", None)
    params = params.params if params is not None else {}
    for name in VARIANT_FIXTURES:
        if name in params:
            return params[name]
    pytest.fail("the variant fixture needs one of the fixtures %s" % ", ".join(VARIANT_FIXTURES),
                pytrace=False)
