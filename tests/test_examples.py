"""The example programs of the socketserver documentation, run as written.

https://docs.python.org/3.13/library/socketserver.html#examples -- both the
current text (reworked by gh-112020) and the long-standing earlier one, since
both are copied into programs in the wild.  Each server runs serve_forever()
in a thread, on 127.0.0.1 port 0 instead of localhost:9999.
"""
import os
import re
import socket
import sys
import threading

import pytest

import util

HOST = util.HOST
TIMEOUT = util.TIMEOUT


# ---------------------------------------------------------------------------
# The handlers of the documentation
# ---------------------------------------------------------------------------

def tcp_handler_current(ss):
    class MyTCPHandler(ss.BaseRequestHandler):
        """
        The request handler class for our server.

        It is instantiated once per connection to the server, and must
        override the handle() method to implement communication to the
        client.
        """

        def handle(self):
            # self.request is the TCP socket connected to the client
            pieces = [b'']
            total = 0
            while b'\n' not in pieces[-1] and total < 10_000:
                pieces.append(self.request.recv(2000))
                total += len(pieces[-1])
            self.data = b''.join(pieces)
            print(f"Received from {self.client_address[0]}:")
            print(self.data.decode("utf-8"))
            # just send back the same data, but upper-cased
            self.request.sendall(self.data.upper())
            # after we return, the socket will be closed.

    return MyTCPHandler


def tcp_handler_classic(ss):
    class MyTCPHandler(ss.BaseRequestHandler):
        def handle(self):
            # self.request is the TCP socket connected to the client
            self.data = self.request.recv(1024).strip()
            print("{} wrote:".format(self.client_address[0]))
            print(self.data)
            # just send back the same data, but upper-cased
            self.request.sendall(self.data.upper())

    return MyTCPHandler


def stream_handler_current(ss):
    class MyTCPHandler(ss.StreamRequestHandler):
        def handle(self):
            # self.rfile is a file-like object created by the handler.
            # We can now use e.g. readline() instead of raw recv() calls.
            # We limit ourselves to 10000 bytes to avoid abuse by the sender.
            self.data = self.rfile.readline(10000).rstrip()
            print(f"{self.client_address[0]} wrote:")
            print(self.data.decode("utf-8"))
            # Likewise, self.wfile is a file-like object used to write back
            # to the client
            self.wfile.write(self.data.upper())

    return MyTCPHandler


def stream_handler_classic(ss):
    class MyTCPHandler(ss.StreamRequestHandler):
        def handle(self):
            # self.rfile is a file-like object created by the handler;
            # we can now use e.g. readline() instead of raw recv() calls
            self.data = self.rfile.readline().strip()
            print("{} wrote:".format(self.client_address[0]))
            print(self.data)
            # Likewise, self.wfile is a file-like object used to write back
            # to the client
            self.wfile.write(self.data.upper())

    return MyTCPHandler


def udp_handler(ss):
    class MyUDPHandler(ss.BaseRequestHandler):
        """
        This class works similar to the TCP handler class, except that
        self.request consists of a pair of data and client socket, and since
        there is no connection the client address must be given explicitly
        when sending data back via sendto().
        """

        def handle(self):
            data = self.request[0].strip()
            socket = self.request[1]
            print(f"{self.client_address[0]} wrote:")
            print(data)
            socket.sendto(data.upper(), self.client_address)

    return MyUDPHandler


# ---------------------------------------------------------------------------
# The clients of the documentation (with a timeout added)
# ---------------------------------------------------------------------------

def tcp_client_current(address, data):
    # Create a socket (SOCK_STREAM means a TCP socket)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        # Connect to server and send data
        sock.connect(address)
        sock.sendall(bytes(data, "utf-8"))
        sock.sendall(b"\n")

        # Receive data from the server and shut down
        received = str(sock.recv(1024), "utf-8")
    return received


def tcp_client_classic(address, data):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(address)
        sock.sendall(bytes(data + "\n", "utf-8"))
        received = str(sock.recv(1024), "utf-8")
    finally:
        sock.close()
    return received


def udp_client(address, data):
    # SOCK_DGRAM is the socket type to use for UDP sockets
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    try:
        # As you can see, there is no connect() call; UDP has no connections.
        # Instead, data is directly sent to the recipient via sendto().
        sock.sendto(bytes(data + "\n", "utf-8"), address)
        received = str(sock.recv(1024), "utf-8")
    finally:
        sock.close()
    return received


def _run_tcp_example(ss, handler, client, messages):
    """Run the server like the example does, feed it messages; return replies."""
    replies = []
    with ss.TCPServer((HOST, 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            for message in messages:
                replies.append(client(server.server_address, message))
        finally:
            stopper = util.ThreadCall(server.shutdown)
            assert stopper.join(TIMEOUT), "shutdown() did not return"
            thread.join(TIMEOUT)
            assert not thread.is_alive()
    return replies


MESSAGES = ["hello world with TCP", "python is nice"]


def test_tcp_server_example_current(ss, capsys):
    replies = _run_tcp_example(ss, tcp_handler_current(ss), tcp_client_current, MESSAGES)
    # The reply is everything up to and including the newline, upper-cased
    # (one recv(1024) gets it all on the loopback).
    assert replies == ["HELLO WORLD WITH TCP\n", "PYTHON IS NICE\n"]
    out = capsys.readouterr().out
    assert out == ("Received from 127.0.0.1:\nhello world with TCP\n\n"
                   "Received from 127.0.0.1:\npython is nice\n\n")


def test_tcp_server_example_classic(ss, capsys):
    replies = _run_tcp_example(ss, tcp_handler_classic(ss), tcp_client_classic, MESSAGES)
    assert replies == ["HELLO WORLD WITH TCP", "PYTHON IS NICE"]
    out = capsys.readouterr().out
    assert out == ("127.0.0.1 wrote:\nb'hello world with TCP'\n"
                   "127.0.0.1 wrote:\nb'python is nice'\n")


def test_stream_request_handler_example_current(ss, capsys):
    replies = _run_tcp_example(ss, stream_handler_current(ss), tcp_client_current, MESSAGES)
    assert replies == ["HELLO WORLD WITH TCP", "PYTHON IS NICE"]
    out = capsys.readouterr().out
    assert out == ("127.0.0.1 wrote:\nhello world with TCP\n"
                   "127.0.0.1 wrote:\npython is nice\n")


def test_stream_request_handler_example_classic(ss, capsys):
    replies = _run_tcp_example(ss, stream_handler_classic(ss), tcp_client_classic, MESSAGES)
    assert replies == ["HELLO WORLD WITH TCP", "PYTHON IS NICE"]
    out = capsys.readouterr().out
    assert out == ("127.0.0.1 wrote:\nb'hello world with TCP'\n"
                   "127.0.0.1 wrote:\nb'python is nice'\n")


def test_stream_request_handler_example_many_lines(ss):
    """The StreamRequestHandler example reads one line, whatever follows."""
    handler = stream_handler_current(ss)
    with ss.TCPServer((HOST, 0), handler) as server:
        with util.background_server(server, close=False):
            with util.tcp_connect(server.server_address) as sock:
                sock.sendall(b"first line\nsecond line\n")
                assert util.recv_until_eof(sock) == b"FIRST LINE"


def test_tcp_server_example_large_message(ss):
    """The current BaseRequestHandler example gathers pieces up to a newline."""
    handler = tcp_handler_current(ss)
    payload = "x" * 5000
    with ss.TCPServer((HOST, 0), handler) as server:
        with util.background_server(server, close=False):
            with util.tcp_connect(server.server_address) as sock:
                for i in range(0, len(payload), 1000):
                    sock.sendall(payload[i:i + 1000].encode())
                sock.sendall(b"\n")
                assert util.recv_until_eof(sock) == payload.upper().encode() + b"\n"


def test_udp_server_example(ss, capsys):
    handler = udp_handler(ss)
    with ss.UDPServer((HOST, 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            replies = [udp_client(server.server_address, m) for m in MESSAGES]
        finally:
            stopper = util.ThreadCall(server.shutdown)
            assert stopper.join(TIMEOUT), "shutdown() did not return"
            thread.join(TIMEOUT)
    assert replies == ["HELLO WORLD WITH TCP", "PYTHON IS NICE"]
    out = capsys.readouterr().out
    assert out == ("127.0.0.1 wrote:\nb'hello world with TCP'\n"
                   "127.0.0.1 wrote:\nb'python is nice'\n")


# ---------------------------------------------------------------------------
# Asynchronous mix-ins
# ---------------------------------------------------------------------------

def test_threading_mixin_example(ss, capsys):
    class ThreadedTCPRequestHandler(ss.BaseRequestHandler):

        def handle(self):
            data = str(self.request.recv(1024), 'ascii')
            cur_thread = threading.current_thread()
            response = bytes("{}: {}".format(cur_thread.name, data), 'ascii')
            self.request.sendall(response)

    class ThreadedTCPServer(ss.ThreadingMixIn, ss.TCPServer):
        pass

    def client(ip, port, message):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect((ip, port))
            sock.sendall(bytes(message, 'ascii'))
            # recv(1024) as in the documentation, then the rest until EOF,
            # so that a short first read cannot make the test flaky.
            response = str(sock.recv(1024) + util.recv_until_eof(sock), 'ascii')
            print("Received: {}".format(response))
        return response

    # Port 0 means to select an arbitrary unused port
    HOST_, PORT = HOST, 0

    server = ThreadedTCPServer((HOST_, PORT), ThreadedTCPRequestHandler)
    with server:
        ip, port = server.server_address

        # Start a thread with the server -- that thread will then start one
        # more thread for each request
        server_thread = threading.Thread(target=server.serve_forever)
        # Exit the server thread when the main thread terminates
        server_thread.daemon = True
        server_thread.start()
        print("Server loop running in thread:", server_thread.name)

        responses = [client(ip, port, "Hello World %d" % i) for i in (1, 2, 3)]

        stopper = util.ThreadCall(server.shutdown)
        assert stopper.join(TIMEOUT), "shutdown() did not return"
        server_thread.join(TIMEOUT)
        assert not server_thread.is_alive()
    assert server.socket.fileno() == -1

    names = []
    for i, response in enumerate(responses, 1):
        name, sep, message = response.partition(": ")
        assert sep and message == "Hello World %d" % i
        names.append(name)
    # Each request ran in a thread of its own, not the serving thread nor
    # the main one.
    assert len(set(names)) == 3
    assert server_thread.name not in names
    assert threading.main_thread().name not in names
    # The threads are plain threading.Thread's named after their target, as
    # in the documentation's sample output ("Thread-2 (process_request_thread)"
    # on 3.10+; "Thread-2" before).
    if sys.version_info >= (3, 10):
        pattern = r"Thread-\d+ \(process_request_thread\)"
    else:
        pattern = r"Thread-\d+"
    for name in names:
        assert re.fullmatch(pattern, name), name
    numbers = [int(re.match(r"Thread-(\d+)", name).group(1)) for name in names]
    assert numbers == sorted(numbers)

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Server loop running in thread: " + server_thread.name
    assert out[1:] == ["Received: " + r for r in responses]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork.*:DeprecationWarning")
def test_forking_mixin_example(ss):
    """"The ForkingMixIn class is used in the same way, except that the server
    will spawn a new process for each request."""

    class ForkingTCPRequestHandler(ss.StreamRequestHandler):
        def handle(self):
            data = self.rfile.readline().strip()
            self.wfile.write(b"%d: %s" % (os.getpid(), data.upper()))

    class ForkingTCPServer(ss.ForkingMixIn, ss.TCPServer):
        pass

    for server_class in (ForkingTCPServer, ss.ForkingTCPServer):
        server = server_class((HOST, 0), ForkingTCPRequestHandler)
        with server:
            server_thread = threading.Thread(target=server.serve_forever, daemon=True)
            server_thread.start()
            try:
                replies = [util.tcp_roundtrip(server.server_address, b"hello %d\n" % i)
                           for i in (1, 2, 3)]
            finally:
                stopper = util.ThreadCall(server.shutdown)
                assert stopper.join(TIMEOUT), "shutdown() did not return"
                server_thread.join(TIMEOUT)
        # server_close() (block_on_close) reaped every child.
        assert not server.active_children
        pids = []
        for i, reply in enumerate(replies, 1):
            pid, sep, message = reply.partition(b": ")
            assert sep and message == b"HELLO %d" % i
            pids.append(int(pid))
        assert os.getpid() not in pids
        assert len(set(pids)) == 3
