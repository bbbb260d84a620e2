"""The compiled core must be what serves, unless the twin was asked for."""
import os

import pytest

import fastserver
from fastserver import _core_py, _engine


def test_compiled_core_loaded():
    if os.environ.get("FASTSERVER_NO_EXTENSIONS"):
        assert fastserver.CORE_IMPLEMENTATION == "python"
        assert _engine.core is _core_py
        return
    assert _engine.compiled_core is not None, (
        "fastserver._core did not load: the package was installed without "
        "its compiled core (set FASTSERVER_NO_EXTENSIONS=1 to test the twin)"
    )
    assert fastserver.CORE_IMPLEMENTATION == "c"
    assert _engine.core is _engine.compiled_core


def test_cores_share_an_interface():
    if _engine.compiled_core is None:
        pytest.skip("compiled core not available")
    names = {
        "Waker", "Poller", "serve_forever", "handle_request_noblock", "wait_readable",
        "native_backend", "choose_backend", "DRAIN_BATCH", "RESOURCE_ERRNOS",
        "BACKOFF_MIN", "BACKOFF_MAX", "HANDLED", "BACK_OFF", "LISTENER_CLOSED", "Plan",
        "SocketWriter",
    }
    for core in (_engine.compiled_core, _core_py):
        missing = {name for name in names if not hasattr(core, name)}
        assert not missing, (core.__name__, missing)
    for name in ("DRAIN_BATCH", "RESOURCE_ERRNOS", "BACKOFF_MIN", "BACKOFF_MAX",
                 "HANDLED", "BACK_OFF", "LISTENER_CLOSED"):
        assert getattr(_engine.compiled_core, name) == getattr(_core_py, name), name
