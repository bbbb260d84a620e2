"""The implementations the suite tests, and the one way to select each.

Every behaviour is written once and run against several implementations of
socketserver's API, the *variants*:

- ``stdlib``   -- CPython's own socketserver, the reference behaviour;
- ``c-epoll``  -- fastserver on the compiled core with its native poller
                  (epoll on Linux, kqueue on BSD/macOS);
- ``c-poll``   -- fastserver on the compiled core forced onto poll(2);
- ``py``       -- fastserver on the pure-Python twin core.

A fastserver variant is a *core* (``c``: the compiled ``fastserver._core``,
``py``: the twin ``fastserver._core_py``) and a poller backend.  Tests of
the core's own building blocks (its poller, waker, readers) take the cores
themselves: ``CORES``, ``core_params()`` and ``core(name)``.

This module is the only place that selects a variant:

- in the test process, ``selected(name, monkeypatch)``: conftest.py's
  fixtures (``ss``, ``fs``, ``ss_native``, ``fs_native``) are made of it;
- in a child process, ``child_env(name)`` for its environment and
  ``CHILD_IMPORT`` at the top of its source (it binds ``ss`` to the module
  under test, through ``select_in_child()``).

A variant or core that cannot run here (no compiled core: it was not built,
or FASTSERVER_NO_EXTENSIONS=1 switched it off) is skipped with the reason,
never left out, so every run collects the same tests; test_build.py fails
loudly when the compiled core is missing without that variable.

Child processes load this module too (through CHILD_IMPORT): it imports
pytest only to skip, and fastserver only for a fastserver variant.
"""
import collections
import contextlib
import os
import socketserver

from util import fastserver_path

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

#: ``core``: a name in CORES, None for the stdlib; ``poller``: the value of
#: FASTSERVER_POLLER it runs with, None for the core's native poller.
Variant = collections.namedtuple("Variant", "name core poller")

#: Every variant, by name, in the order the tests run them.
VARIANTS = {variant.name: variant for variant in (
    Variant("stdlib", None, None),
    Variant("c-epoll", "c", None),
    Variant("c-poll", "c", "poll"),
    Variant("py", "py", None),
)}

#: The reference and every fastserver variant (fixture ``ss``).
ALL = tuple(VARIANTS)
#: Every fastserver variant (fixture ``fs``).
FASTSERVER = tuple(name for name in ALL if VARIANTS[name].core is not None)
#: Each core once, on its native poller (fixture ``fs_native``): for tests
#: whose subject sits above the poller (the survival battery's flavour x
#: transport matrices, the leak runs, subprocess supervisors); the poll(2)
#: backend would only repeat them at their cost, and the loop-level tests
#: cover it.
NATIVE = tuple(name for name in FASTSERVER if VARIANTS[name].poller is None)
#: The reference and each core on its native poller (fixture ``ss_native``).
REFERENCE_AND_NATIVE = ("stdlib",) + NATIVE

#: The cores, by the names the variants use.
CORES = ("c", "py")
#: A longer name of each core, where a test's ids spell it out.
CORE_LABELS = {"c": "compiled", "py": "python"}

#: What a core that cannot run here is skipped with.
UNAVAILABLE = "compiled core not available"

#: The environment variable that names a child process's variant.
VARIANT_VARIABLE = "FASTSERVER_TEST_VARIANT"
#: The environment variable the cores read for their poller backend.
POLLER_VARIABLE = "FASTSERVER_POLLER"


def _skip(reason):
    import pytest  # imported here: child processes load this module too

    pytest.skip(reason)


def _core_or_none(name):
    """The core module called ``name`` (see CORES), or None where the
    compiled core is not there."""
    from fastserver import _engine

    if name == "c":
        return _engine.compiled_core
    if name == "py":
        return _engine.python_core
    raise ValueError("unknown core %r (known: %s)" % (name, ", ".join(CORES)))


def core_available(name):
    """True when the core called ``name`` can run here."""
    return _core_or_none(name) is not None


def available(name):
    """True when the variant called ``name`` can run here."""
    core_name = VARIANTS[name].core
    return core_name is None or core_available(core_name)


def core(name):
    """The core module called ``name``; the test is skipped where it
    cannot run."""
    module = _core_or_none(name)
    if module is None:
        _skip(UNAVAILABLE)
    return module


def core_params(ids=None):
    """CORES as parameters for ``pytest.mark.parametrize``, each marked to
    be skipped where that core cannot run (so that pytest reports the skip
    at the test, not here); ``ids`` maps a core's name to the test id it
    gets (default: the name)."""
    import pytest

    return [pytest.param(name, id=(ids or {}).get(name, name),
                         marks=pytest.mark.skipif(not core_available(name), reason=UNAVAILABLE))
            for name in CORES]


def require_green():
    """Skip the test unless green handlers can run on the core this process
    uses now: fastserver.green's own rule (greenlet installed, the compiled
    core selected), with its reason."""
    from fastserver import green

    reason = green.green_unavailable()
    if reason is not None:
        _skip(reason)


def default_variant():
    """The variant a plain ``import fastserver`` serves on here."""
    return "c-epoll" if core_available("c") else "py"


@contextlib.contextmanager
def selected(name, monkeypatch):
    """Select the variant ``name`` in this process for the ``with`` body,
    which gets the module under test (``socketserver`` or ``fastserver``);
    a variant that cannot run here skips the test.

    The core is switched with ``_engine.use_core()``, the package's one
    switch (it takes the loop, poller, waker and the request handlers' steps
    together; assigning ``_engine.core`` would leave the handlers on the
    old core), and switched back on exit.  FASTSERVER_POLLER, read whenever
    a poller is made, is set through ``monkeypatch``, so that pytest undoes
    it in order with the test's own monkeypatching.
    """
    variant = VARIANTS[name]
    if variant.core is None:
        yield socketserver
        return
    new_core = core(variant.core)
    if variant.poller is None:
        monkeypatch.delenv(POLLER_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(POLLER_VARIABLE, variant.poller)
    import fastserver
    from fastserver import _engine

    previous = _engine.core
    _engine.use_core(new_core)
    try:
        yield fastserver
    finally:
        _engine.use_core(previous)


# ---------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------


def child_env(name, extra_path=()):
    """``os.environ`` for a child process that runs the variant ``name``.

    PYTHONPATH lets the child import fastserver from where this process did
    (after ``extra_path``); the FASTSERVER_* variables of this process are
    passed through and then set for the variant: FASTSERVER_NO_EXTENSIONS=1
    for ``py`` (the child does not even import the compiled core),
    FASTSERVER_POLLER=poll for ``c-poll``, neither for ``c-epoll``.
    FASTSERVER_TEST_VARIANT names the variant for select_in_child().
    """
    variant = VARIANTS[name]
    env = dict(os.environ)
    paths = list(extra_path)
    fs_path = fastserver_path()
    if fs_path:
        paths.append(fs_path)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if variant.core == "py":
        env["FASTSERVER_NO_EXTENSIONS"] = "1"
    elif variant.core == "c":
        env.pop("FASTSERVER_NO_EXTENSIONS", None)
    if variant.core is not None:
        if variant.poller is None:
            env.pop(POLLER_VARIABLE, None)
        else:
            env[POLLER_VARIABLE] = variant.poller
    env[VARIANT_VARIABLE] = name
    return env


def select_in_child():
    """In a child process started with child_env(): select the variant it
    names, for the rest of the process, and return the module under test."""
    variant = VARIANTS[os.environ[VARIANT_VARIABLE]]
    if variant.core is None:
        return socketserver
    new_core = _core_or_none(variant.core)
    assert new_core is not None, "%s in a child of the %s variant" % (UNAVAILABLE, variant.name)
    assert os.environ.get(POLLER_VARIABLE) == variant.poller, "not started with child_env()"
    import fastserver
    from fastserver import _engine

    _engine.use_core(new_core)
    return fastserver


#: Python source that binds ``ss`` to the module under test in a child
#: process started with child_env(): put it first in the child's source.
CHILD_IMPORT = '''
import sys as _sys
if %r not in _sys.path:
    _sys.path.insert(0, %r)
import variants as _variants
ss = _variants.select_in_child()
''' % (TESTS_DIR, TESTS_DIR)
