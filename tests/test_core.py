"""The core's building blocks, on every core and poller backend."""
import os
import signal
import socket
import threading
import time

import pytest

import variants

#: Every core: a test of a core that cannot run here is skipped.
CORES = variants.CORES


@pytest.fixture(params=[(c, b) for c in CORES for b in ("native", "poll")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def poller_factory(request):
    core = variants.core(request.param[0])
    backend = None if request.param[1] == "native" else "poll"
    return core, (lambda: core.Poller(backend))


def test_waker_wakes_poller(poller_factory):
    core, make = poller_factory
    waker, poller = core.Waker(), make()
    try:
        poller.register(waker.fileno())
        assert poller.wait(0) == []
        waker.wake()
        waker.wake()
        assert poller.wait(1) == [waker.fileno()]
        waker.drain()
        assert poller.wait(0) == []
    finally:
        poller.close()
        waker.close()
    waker.wake()  # after close: a no-op, never a write to a reused fd


def test_poller_reports_listener_and_unregister(poller_factory):
    _core, make = poller_factory
    poller = make()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        poller.register(listener.fileno())
        with socket.create_connection(listener.getsockname()):
            assert poller.wait(2) == [listener.fileno()]
            poller.unregister(listener.fileno())
            assert poller.wait(0) == []
            poller.unregister(listener.fileno())  # twice: not an error
    poller.close()


def test_poller_timeout_is_honoured(poller_factory):
    core, make = poller_factory
    poller = make()
    waker = core.Waker()
    poller.register(waker.fileno())
    start = time.monotonic()
    assert poller.wait(0.05) == []
    assert time.monotonic() - start >= 0.05  # never returns early (would spin)
    poller.close()
    waker.close()


def test_unknown_backend_is_a_clear_error():
    for core in map(variants.core, filter(variants.core_available, CORES)):
        with pytest.raises(ValueError, match="unknown poller backend"):
            core.Poller("nonsense")


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv("FASTSERVER_POLLER", "poll")
    for core in map(variants.core, filter(variants.core_available, CORES)):
        poller = core.Poller()
        assert poller.backend == "poll"
        poller.close()


@pytest.mark.parametrize("core_name", variants.core_params())
def test_wait_readable(core_name):
    core = variants.core(core_name)
    a, b = socket.socketpair()
    with a, b:
        assert core.wait_readable(a.fileno(), 0) is False
        b.send(b"x")
        assert core.wait_readable(a.fileno(), None) is True


@pytest.mark.parametrize("core_name", variants.core_params())
def test_wait_survives_signals_and_runs_handlers(core_name):
    """EINTR is retried for what is left of the timeout; handlers run."""
    core = variants.core(core_name)
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(1))
    a, b = socket.socketpair()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
        start = time.monotonic()
        assert core.wait_readable(a.fileno(), 0.2) is False
        poller = core.Poller()
        poller.register(a.fileno())
        assert poller.wait(0.2) == []
        poller.close()
        assert time.monotonic() - start >= 0.4
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()
    assert seen


@pytest.mark.parametrize("core_name", variants.core_params())
def test_signal_handler_exception_propagates(core_name):
    """Ctrl-C during a wait raises KeyboardInterrupt out of the wait."""
    core = variants.core(core_name)

    def interrupt(*args):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    a, b = socket.socketpair()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(KeyboardInterrupt):
            core.wait_readable(a.fileno(), 5)
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        poller = core.Poller()
        poller.register(a.fileno())
        with pytest.raises(KeyboardInterrupt):
            poller.wait(5)
        poller.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()


@pytest.mark.parametrize("core_name", variants.core_params())
def test_waker_wakes_across_threads(core_name):
    core = variants.core(core_name)
    waker, poller = core.Waker(), core.Poller()
    poller.register(waker.fileno())
    threading.Timer(0.05, waker.wake).start()
    assert poller.wait(5) == [waker.fileno()]
    poller.close()
    waker.close()


@pytest.mark.parametrize("core_name", variants.core_params())
def test_waker_fds_are_cloexec(core_name):
    core = variants.core(core_name)
    waker = core.Waker()
    assert not os.get_inheritable(waker.fileno())
    waker.close()
