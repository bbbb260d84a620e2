"""The compiled core must be what serves, unless the twin was asked for."""
import os

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
