"""Replay the fuzzer's corpus: a case tools/fuzz.py once found stays fixed.

tools/fuzz.py drives the compiled rfile/wfile with random chunkings, buffer
sizes, line limits, timeouts and interleaved calls, checks every result
against a model of the stream (which the stdlib's makefile() and the twin
keep), and saves each case the compiled core got wrong in
tests/fuzz_corpus/.  Each saved case runs here, on the compiled reader
and on the twin's (held to the same model); hand-written seeds
(``seed-*.json``) cover every call and delivery mode.  A case whose bug is
not fixed yet carries an ``xfail`` reason in its file: remove it with the
fix (the xfail is strict, so a fixed case fails until then).
"""
import importlib.util
import os

import pytest

import variants

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def load_fuzzer():
    spec = importlib.util.spec_from_file_location("fastserver_fuzz", os.path.join(TOOLS, "fuzz.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = load_fuzzer()
ENTRIES = [(name, entry) for name, entry in fuzz.load_corpus_entries()]


#: What tools/fuzz.py calls each core (run_case's ``subject``), which the
#: tests' ids have always used.
SUBJECTS = {"c": "core", "py": "twin"}


@pytest.mark.parametrize("core_name", variants.core_params(ids=SUBJECTS))
@pytest.mark.parametrize("name, entry", ENTRIES, ids=[name for name, _ in ENTRIES])
def test_corpus_case(name, entry, core_name, request):
    """The compiled reader and writer (and the twin's reader, against the
    same model) on one saved case.  ``xfail`` reasons are the core's."""
    subject = SUBJECTS[core_name]
    if subject == "core" and entry.get("xfail"):
        request.applymarker(pytest.mark.xfail(strict=True, raises=fuzz.Finding,
                                              reason=entry["xfail"]))
    fuzz.run_case(entry["case"], subject)


def test_corpus_is_not_empty():
    assert any(name.startswith("seed-") for name, _ in ENTRIES)
