"""The contract between the server classes and the two cores
(fastserver/_contract.py) is written once, and both cores keep it."""
import dataclasses
import errno

import pytest

from fastserver import _contract, _core_py, _engine, handlers

import variants

#: What every core offers, by name (fastserver/_contract.py's Core, and the
#: pieces the two loops share so that they read side by side).
CORE_NAMES = {
    "Waker", "Poller", "AcceptGate", "serve_forever", "handle_request_noblock",
    "wait_readable", "native_backend", "choose_backend", "DRAIN_BATCH",
}

needs_compiled = pytest.mark.skipif(not variants.core_available("c"), reason=variants.UNAVAILABLE)

#: Each core, with the ids these tests have always had ("compiled", "python").
each_core = pytest.mark.parametrize("core_name", variants.core_params(ids=variants.CORE_LABELS))


@each_core
def test_each_core_offers_the_interface(core_name):
    core = variants.core(core_name)
    assert not {name for name in CORE_NAMES if not hasattr(core, name)}
    assert core.DRAIN_BATCH == _contract.DRAIN_BATCH


@needs_compiled
def test_the_compiled_loop_reads_every_field_of_the_plan():
    """The compiled core copies the plan into C fields; a field added to the
    contract's Plan and forgotten there fails here."""
    core = _engine.compiled_core
    listener = __import__("socket").socket()
    try:
        plan = _contract.Plan(
            handle_one=None, accept="stream", listener=listener, verify_default=True,
            process_default=True, finish_default=True, shutdown="stream",
            service_actions_default=True, tcp_nodelay=True, idle_timeout=2.5,
            max_connections=7, overload="refuse",
        )
        loop_plan = core.LoopPlan(plan)
        assert loop_plan.plan is plan
        for field in dataclasses.fields(_contract.Plan):
            assert getattr(loop_plan, field.name) == getattr(plan, field.name), field.name
    finally:
        listener.close()


@needs_compiled
def test_the_cores_agree_on_what_an_errno_means():
    """The compiled core spells the errno sets in C; they must mean what the
    contract says (it only adds "nothing pending" for what the stdlib ignores)."""
    core = _engine.compiled_core
    for code in errno.errorcode:
        expected = _contract.status_of_errno(code)
        got = core.status_of_errno(code)
        if expected == _contract.HANDLED:  # "nothing pending" is the core's own
            assert got not in (_contract.HANDLED, _contract.BACK_OFF,
                               _contract.LISTENER_CLOSED), errno.errorcode[code]
        else:
            assert got == expected, errno.errorcode[code]


def test_a_bad_plan_is_refused():
    with pytest.raises(ValueError, match="accept"):
        _contract.Plan(accept="sideways")
    with pytest.raises(ValueError, match="needs the listening socket"):
        _contract.Plan(accept="stream")
    with pytest.raises(ValueError, match="overload"):
        _contract.Plan(overload="explode")


def test_check_overload_names_the_setting():
    assert _contract.check_overload("refuse") == "refuse"
    with pytest.raises(ValueError, match=r"MyServer\.overload must be one of 'wait', 'refuse'"):
        _contract.check_overload("explode", "MyServer.overload")


@each_core
def test_the_switch_takes_the_handler_steps_with_the_core(core_name):
    """One switch selects a core as a whole: with the twin, the handlers run
    their Python bodies; with the compiled core, its compiled copies."""
    core = variants.core(core_name)
    previous = _engine.core
    _engine.use_core(core)
    try:
        for cls, name, step in handlers._STEPS:
            expected = getattr(core, step, handlers._PYTHON_STEPS[cls, name])
            assert cls.__dict__[name] is expected, (cls.__name__, name)
        if core is _core_py:
            assert handlers.StreamRequestHandler.setup is handlers._PYTHON_STEPS[
                handlers.StreamRequestHandler, "setup"]
    finally:
        _engine.use_core(previous)


def test_a_wrapped_default_is_not_taken_for_the_default():
    """functools.wraps copies a function's attributes onto the wrapper: the
    marks of the default hooks are kept by identity, so a user's wrapper is
    still called."""
    import functools

    import fastserver

    def logged(method):
        @functools.wraps(method)
        def wrapper(self, *args):
            return method(self, *args)

        return wrapper

    class Server(fastserver.TCPServer):
        verify_request = logged(fastserver.TCPServer.verify_request)

    with Server(("127.0.0.1", 0), fastserver.BaseRequestHandler) as server:
        assert _contract.default_kind(server, "verify_request") is None
        assert _contract.default_kind(server, "get_request") == "stream"
