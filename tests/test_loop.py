"""What fastserver's loop does beyond the stdlib's (see README, "Differences
from the stdlib"): the waker, the drain, and not spinning on a dead
listener.  Correctness only: speed is measured in bench/, never here."""
import os
import signal
import socket
import threading
import time

import pytest

from util import ThreadsCPU


class Echo:
    """A BaseRequestHandler echo, built for whichever module is under test."""

    @staticmethod
    def make(module):
        class Handler(module.BaseRequestHandler):
            def handle(self):
                self.request.sendall(self.request.recv(1024))

        return Handler


def start(server, poll_interval=0.5):
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    return thread


def echo_once(address, payload=b"ping"):
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(payload)
        return client.recv(1024)


def test_shutdown_wakes_a_loop_that_never_polls(fs):
    """With poll_interval=None the stdlib never notices shutdown(); the
    waker interrupts fastserver's wait."""
    server = fs.TCPServer(("127.0.0.1", 0), Echo.make(fs))
    thread = start(server, poll_interval=None)
    assert echo_once(server.server_address) == b"ping"
    stopper = threading.Thread(target=server.shutdown, daemon=True)
    stopper.start()
    stopper.join(10)
    thread.join(10)
    assert not stopper.is_alive() and not thread.is_alive()
    server.server_close()


def test_pending_requests_are_all_served_with_service_actions_between(fs):
    """Connections that queued before serve_forever() are drained in one
    wake-up, with service_actions() after each request as in the stdlib."""
    calls = []

    class Server(fs.TCPServer):
        request_queue_size = 64

        def service_actions(self):
            calls.append(1)

    server = Server(("127.0.0.1", 0), Echo.make(fs))
    clients = []
    for i in range(20):
        client = socket.create_connection(server.server_address, timeout=5)
        client.sendall(b"%d" % i)
        clients.append(client)
    thread = start(server, poll_interval=5)
    for i, client in enumerate(clients):
        assert client.recv(16) == b"%d" % i
        client.close()
    server.shutdown()
    thread.join(10)
    server.server_close()
    assert len(calls) >= 20


def test_closing_the_listener_while_serving_does_not_spin(fs):
    server = fs.TCPServer(("127.0.0.1", 0), Echo.make(fs))
    thread = start(server, poll_interval=0.05)
    assert echo_once(server.server_address) == b"ping"
    server.socket.close()  # what server_close() does, from another thread
    time.sleep(0.1)
    # The loop's thread alone: whatever else this process runs is not the loop.
    with ThreadsCPU([thread]) as cpu:
        before = cpu.seconds()
        time.sleep(0.5)
        used = cpu.seconds() - before
    server.shutdown()
    thread.join(10)
    server.server_close()
    assert used < 0.25, f"the loop used {used:.2f} s of CPU in 0.5 s"


def test_server_close_while_serving_then_shutdown(fs):
    server = fs.TCPServer(("127.0.0.1", 0), Echo.make(fs))
    thread = start(server)
    assert echo_once(server.server_address) == b"ping"
    server.server_close()
    server.shutdown()
    thread.join(10)
    assert not thread.is_alive()
    server.shutdown()  # after the loop: returns at once, as in the stdlib


def test_instance_override_of_handle_request_noblock(fs):
    seen = []
    server = fs.TCPServer(("127.0.0.1", 0), Echo.make(fs))
    default = server._handle_request_noblock

    def spy():
        seen.append(1)
        default()

    server._handle_request_noblock = spy
    thread = start(server)
    assert echo_once(server.server_address) == b"ping"
    server.shutdown()
    thread.join(10)
    server.server_close()
    assert seen


def test_keyboard_interrupt_stops_serve_forever_cleanly(fs):
    """A signal handler's exception leaves serve_forever() and the server
    can serve again afterwards."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")

    def interrupt(*args):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    server = fs.TCPServer(("127.0.0.1", 0), Echo.make(fs))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            server.serve_forever(poll_interval=None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    thread = start(server)
    assert echo_once(server.server_address) == b"ping"
    server.shutdown()
    thread.join(10)
    server.server_close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_gets_its_own_waker(fs):
    """A child serving with an inherited server object must not share the
    parent's wake-up fd: its shutdown() must not wake, or be stolen by, the
    parent's loop."""
    server = fs.TCPServer(("127.0.0.1", 0), Echo.make(fs))
    thread = start(server)
    assert echo_once(server.server_address) == b"ping"
    parent_waker = server._fastserver_engine.waker.fileno()
    pid = os.fork()
    if pid == 0:  # child: serve and stop with its own loop
        status = 1
        try:
            child = threading.Thread(target=server.serve_forever, daemon=True)
            child.start()
            time.sleep(0.05)
            server.shutdown()
            child.join(5)
            engine = server._fastserver_engine
            status = 0 if (not child.is_alive() and engine.pid == os.getpid()) else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if hasattr(os, "waitstatus_to_exitcode"):
        assert os.waitstatus_to_exitcode(status) == 0
    else:
        assert status == 0
    # The parent's loop is untouched and still serves.
    assert server._fastserver_engine.waker.fileno() == parent_waker
    assert echo_once(server.server_address) == b"ping"
    server.shutdown()
    thread.join(10)
    server.server_close()


def test_datagrams_received_in_a_batch_survive_an_interrupted_loop(fs):
    """The compiled core receives datagrams in batches (recvmmsg); when a
    handler ends the loop with a BaseException, the datagrams of the batch
    not yet served are served by the next loop, in order."""
    served = []

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            data = self.request[0]
            served.append(data)
            if data == b"1" and served.count(b"1") == 1:
                raise KeyboardInterrupt

    with fs.UDPServer(("127.0.0.1", 0), Handler) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for i in range(5):
                client.sendto(b"%d" % i, server.server_address)
            time.sleep(0.1)  # all five queued before the loop starts
            with pytest.raises(KeyboardInterrupt):
                server.serve_forever(poll_interval=0.05)
            assert served == [b"0", b"1"]
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while len(served) < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                server.shutdown()
                thread.join(10)
    assert served == [b"0", b"1", b"2", b"3", b"4"]


def test_a_signal_delivered_to_another_thread_reaches_the_loop(fs):
    """The signal's Python handler runs in the main thread, between two of
    the stdlib loop's bytecodes; the compiled loop waits in C, so it must
    check for pending signals after every wait, timeouts included."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread")

    class Stop(Exception):
        pass

    def handler(signum, frame):
        raise Stop

    previous = signal.signal(signal.SIGUSR1, handler)
    server = fs.UDPServer(("127.0.0.1", 0), fs.BaseRequestHandler)
    stuck = threading.Event()

    def kick():
        time.sleep(0.1)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # this thread, not main
        if not done.wait(5):
            stuck.set()
            server.shutdown()

    done = threading.Event()
    kicker = threading.Thread(target=kick, daemon=True)
    try:
        kicker.start()
        with pytest.raises(Stop):
            server.serve_forever(poll_interval=0.1)
    finally:
        done.set()
        kicker.join(10)
        signal.signal(signal.SIGUSR1, previous)
        server.server_close()
    assert not stuck.is_set()
