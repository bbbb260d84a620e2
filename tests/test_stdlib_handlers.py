"""The stdlib's own request handlers on servers built from the module under test.

http.server, xmlrpc.server and wsgiref.simple_server build their servers on
``socketserver.TCPServer``.  The classes below copy those servers' source
(CPython 3.13) with ``socketserver`` replaced by the ``ss`` module, so the
stdlib's handlers run unchanged on fastserver's servers.
"""
import functools
import http.client
import http.server
import json
import os
import socket
import threading
import urllib.error
import urllib.request
import xmlrpc.client
import xmlrpc.server
from wsgiref.simple_server import WSGIRequestHandler

import pytest

import variants
from util import HOST, TIMEOUT, background_server, short_tmpdir

# ---------------------------------------------------------------------------
# Server classes, as the stdlib builds them
# ---------------------------------------------------------------------------


def http_server_classes(ss):
    """http.server.HTTPServer and ThreadingHTTPServer over ``ss``."""

    class HTTPServer(ss.TCPServer):

        allow_reuse_address = 1  # Seems to make sense in testing environment

        def server_bind(self):
            """Override server_bind to store the server name."""
            ss.TCPServer.server_bind(self)
            host, port = self.server_address[:2]
            self.server_name = socket.getfqdn(host)
            self.server_port = port

    class ThreadingHTTPServer(ss.ThreadingMixIn, HTTPServer):
        daemon_threads = True

    return HTTPServer, ThreadingHTTPServer


def counting(server_cls):
    """Counts the connections the server accepted (via verify_request)."""

    class Counting(server_cls):
        connections = 0

        def verify_request(self, request, client_address):
            self.connections += 1
            return super().verify_request(request, client_address)

    return Counting


def green_server_class(ss, cls):
    """``cls`` on fastserver's green handlers (where they run), as the
    threading variants put it on ThreadingMixIn."""
    if ss.__name__ == "socketserver":
        pytest.skip("the stdlib has no green handlers")
    variants.require_green()
    from fastserver import green

    return type("Green" + cls.__name__, (green.GreenMixIn, cls), {"block_on_close": False})


def http_server(ss, threading_, handler):
    HTTPServer, ThreadingHTTPServer = http_server_classes(ss)
    if threading_ == "green":
        cls = green_server_class(ss, HTTPServer)
    else:
        cls = ThreadingHTTPServer if threading_ else HTTPServer
    return counting(cls)((HOST, 0), handler)


def xmlrpc_server_class(ss):
    """xmlrpc.server.SimpleXMLRPCServer over ``ss``."""
    SimpleXMLRPCDispatcher = xmlrpc.server.SimpleXMLRPCDispatcher
    SimpleXMLRPCRequestHandler = xmlrpc.server.SimpleXMLRPCRequestHandler

    class SimpleXMLRPCServer(ss.TCPServer, SimpleXMLRPCDispatcher):

        allow_reuse_address = True

        _send_traceback_header = False

        def __init__(
            self,
            addr,
            requestHandler=SimpleXMLRPCRequestHandler,
            logRequests=True,
            allow_none=False,
            encoding=None,
            bind_and_activate=True,
            use_builtin_types=False,
        ):
            self.logRequests = logRequests

            SimpleXMLRPCDispatcher.__init__(self, allow_none, encoding, use_builtin_types)
            ss.TCPServer.__init__(self, addr, requestHandler, bind_and_activate)

    return SimpleXMLRPCServer


def wsgi_server_class(ss):
    """wsgiref.simple_server.WSGIServer over ``ss``."""
    HTTPServer, _ = http_server_classes(ss)

    class WSGIServer(HTTPServer):

        """BaseHTTPServer that implements the Python WSGI protocol"""

        application = None

        def server_bind(self):
            """Override server_bind to store the server name."""
            HTTPServer.server_bind(self)
            self.setup_environ()

        def setup_environ(self):
            # Set up base environment
            env = self.base_environ = {}
            env["SERVER_NAME"] = self.server_name
            env["GATEWAY_INTERFACE"] = "CGI/1.1"
            env["SERVER_PORT"] = str(self.server_port)
            env["REMOTE_HOST"] = ""
            env["CONTENT_LENGTH"] = ""
            env["SCRIPT_NAME"] = ""

        def get_app(self):
            return self.application

        def set_app(self, application):
            self.application = application

    return WSGIServer


# ---------------------------------------------------------------------------
# http.server.SimpleHTTPRequestHandler
# ---------------------------------------------------------------------------


class QuietHTTPHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class QuietHTTP11Handler(QuietHTTPHandler):
    protocol_version = "HTTP/1.1"


CONTENT = b"<html><body>hello from fastserver tests</body></html>\n" * 50


@pytest.fixture
def docroot():
    with short_tmpdir() as d:
        with open(os.path.join(d, "index.txt"), "wb") as f:
            f.write(CONTENT)
        with open(os.path.join(d, "big.bin"), "wb") as f:
            f.write(bytes(range(256)) * 4096)  # 1 MiB
        os.mkdir(os.path.join(d, "sub"))
        with open(os.path.join(d, "sub", "inner.txt"), "wb") as f:
            f.write(b"inner\n")
        yield d


def http_conn(server):
    return http.client.HTTPConnection(HOST, server.server_address[1], timeout=TIMEOUT)


def fetch(server, method, path, headers=None):
    conn = http_conn(server)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("threading_", [False, True, "green"],
                         ids=["HTTPServer", "ThreadingHTTPServer", "GreenHTTPServer"])
def test_simple_http_get_404_head(ss, docroot, threading_):
    handler = functools.partial(QuietHTTPHandler, directory=docroot)
    server = http_server(ss, threading_, handler)
    assert server.server_port == server.server_address[1]
    assert server.server_name == socket.getfqdn(HOST)
    with background_server(server):
        status, headers, body = fetch(server, "GET", "/index.txt")
        assert status == 200
        assert body == CONTENT
        assert int(headers["Content-Length"]) == len(CONTENT)
        assert headers["Content-type"].startswith("text/plain")

        status, headers, body = fetch(server, "GET", "/sub/inner.txt")
        assert (status, body) == (200, b"inner\n")

        status, headers, body = fetch(server, "GET", "/does-not-exist.txt")
        assert status == 404
        assert b"404" in body

        status, headers, body = fetch(server, "HEAD", "/index.txt")
        assert status == 200
        assert body == b""
        assert int(headers["Content-Length"]) == len(CONTENT)

        status, headers, body = fetch(server, "HEAD", "/nope")
        assert (status, body) == (404, b"")

        status, headers, body = fetch(server, "GET", "/")
        assert status == 200
        assert b"index.txt" in body and b"sub/" in body

        status, headers, body = fetch(server, "GET", "/big.bin")
        assert status == 200
        assert body == bytes(range(256)) * 4096

        # Not implemented by SimpleHTTPRequestHandler.
        status, headers, body = fetch(server, "POST", "/index.txt")
        assert status == 501
    assert server.connections == 8


def test_simple_http_with_urllib(ss, docroot):
    handler = functools.partial(QuietHTTPHandler, directory=docroot)
    server = http_server(ss, True, handler)
    url = "http://%s:%d" % (HOST, server.server_address[1])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with background_server(server):
        with opener.open(url + "/index.txt", timeout=TIMEOUT) as resp:
            assert resp.status == 200
            assert resp.read() == CONTENT
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            opener.open(url + "/missing", timeout=TIMEOUT)
        assert excinfo.value.code == 404
        excinfo.value.close()
        req = urllib.request.Request(url + "/index.txt", method="HEAD")
        with opener.open(req, timeout=TIMEOUT) as resp:
            assert resp.status == 200
            assert resp.read() == b""
            assert int(resp.headers["Content-Length"]) == len(CONTENT)


@pytest.mark.parametrize("threading_", [False, True, "green"],
                         ids=["HTTPServer", "ThreadingHTTPServer", "GreenHTTPServer"])
def test_http11_keep_alive(ss, docroot, threading_):
    handler = functools.partial(QuietHTTP11Handler, directory=docroot)
    server = http_server(ss, threading_, handler)
    with background_server(server):
        conn = http_conn(server)
        try:
            sock = None
            for i in range(6):
                path = ["/index.txt", "/sub/inner.txt"][i % 2]
                method = "HEAD" if i == 4 else "GET"
                conn.request(method, path)
                resp = conn.getresponse()
                body = resp.read()
                assert resp.version == 11
                assert not resp.will_close
                assert resp.status == 200
                if path == "/index.txt":
                    assert body == (b"" if method == "HEAD" else CONTENT)
                else:
                    assert body == b"inner\n"
                if sock is None:
                    sock = conn.sock
                # Same connection all along: http.client did not reconnect.
                assert conn.sock is sock
            assert server.connections == 1
            # send_error() (here a 404) closes the keep-alive connection.
            conn.request("GET", "/missing")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 404
            assert resp.will_close
            # http.client reconnects; "Connection: close" from the client
            # makes the server close that one after the response.
            conn.request("GET", "/index.txt", headers={"Connection": "close"})
            resp = conn.getresponse()
            assert resp.read() == CONTENT
            assert conn.sock.recv(1) == b""
        finally:
            conn.close()
    assert server.connections == 2


def test_threading_http_interleaved_keep_alive_connections(ss, docroot):
    """Two open keep-alive connections served at the same time."""
    handler = functools.partial(QuietHTTP11Handler, directory=docroot)
    server = http_server(ss, True, handler)
    with background_server(server):
        conns = [http_conn(server) for _ in range(3)]
        try:
            for _round in range(3):
                for conn in conns:
                    conn.request("GET", "/sub/inner.txt")
                    resp = conn.getresponse()
                    assert (resp.status, resp.read()) == (200, b"inner\n")
            assert server.connections == 3
        finally:
            for conn in conns:
                conn.close()


def test_http_raw_request_line(ss, docroot):
    """A raw HTTP/1.0 exchange over a plain socket; unknown methods get 501."""
    handler = functools.partial(QuietHTTPHandler, directory=docroot)
    server = http_server(ss, False, handler)
    with background_server(server):
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as s:
            s.sendall(b"GET /sub/inner.txt HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ")
        assert body == b"inner\n"
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as s:
            s.sendall(b"FROB / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.0 501 ")


# ---------------------------------------------------------------------------
# xmlrpc.server.SimpleXMLRPCRequestHandler
# ---------------------------------------------------------------------------


class TimeoutTransport(xmlrpc.client.Transport):
    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = TIMEOUT
        return conn


def fail(message):
    raise ValueError(message)


@pytest.mark.parametrize(
    "threading_", [False, True, "green"],
    ids=["SimpleXMLRPCServer", "ThreadingXMLRPCServer", "GreenXMLRPCServer"]
)
def test_xmlrpc_server(ss, threading_):
    SimpleXMLRPCServer = xmlrpc_server_class(ss)
    if threading_ == "green":
        cls = green_server_class(ss, SimpleXMLRPCServer)
    elif threading_:
        bases = (ss.ThreadingMixIn, SimpleXMLRPCServer)
        cls = type("ThreadingXMLRPCServer", bases, {"daemon_threads": True})
    else:
        cls = SimpleXMLRPCServer
    server = cls((HOST, 0), logRequests=False, allow_none=True)
    assert isinstance(server, ss.TCPServer)
    server.register_introspection_functions()
    server.register_multicall_functions()
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(pow)
    server.register_function(fail)
    server.register_function(lambda s: s, "echo")
    url = "http://%s:%d/RPC2" % (HOST, server.server_address[1])
    with background_server(server):
        with xmlrpc.client.ServerProxy(url, transport=TimeoutTransport(), allow_none=True) as proxy:
            assert proxy.add(2, 3) == 5
            assert proxy.pow(2, 10) == 1024
            assert proxy.add("con", "cat") == "concat"
            assert proxy.echo(None) is None
            big = "x" * 200000  # larger than encode_threshold: gzip may be used
            assert proxy.echo(big) == big
            expected = {"add", "pow", "fail", "echo", "system.listMethods"}
            assert expected <= set(proxy.system.listMethods())
            with pytest.raises(xmlrpc.client.Fault) as excinfo:
                proxy.fail("boom")
            assert "boom" in excinfo.value.faultString
            with pytest.raises(xmlrpc.client.Fault):
                proxy.no_such_method()
            multi = xmlrpc.client.MultiCall(proxy)
            multi.add(1, 1)
            multi.pow(3, 2)
            assert list(multi()) == [2, 9]
        # A path outside rpc_paths is a 404.
        conn = http.client.HTTPConnection(HOST, server.server_address[1], timeout=TIMEOUT)
        try:
            conn.request("POST", "/elsewhere", body=b"<x/>", headers={"Content-Type": "text/xml"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 404
        finally:
            conn.close()


# ---------------------------------------------------------------------------
# wsgiref.simple_server.WSGIRequestHandler
# ---------------------------------------------------------------------------


class QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


KEYS = [
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "GATEWAY_INTERFACE",
    "SCRIPT_NAME",
    "CONTENT_TYPE",
]


def wsgi_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here"]
    if path == "/crash":
        raise RuntimeError("application crashed")
    if path == "/chunks":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one ", b"two ", b"", b"three"])
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    info = {k: environ.get(k) for k in KEYS}
    info["body"] = body.decode("latin-1")
    info["multithread"] = environ["wsgi.multithread"]
    out = json.dumps(info).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]


@pytest.mark.parametrize("threading_", [False, True, "green"],
                         ids=["WSGIServer", "ThreadingWSGIServer", "GreenWSGIServer"])
def test_wsgi_server(ss, threading_):
    WSGIServer = wsgi_server_class(ss)
    if threading_ == "green":
        WSGIServer = green_server_class(ss, WSGIServer)
    elif threading_:
        WSGIServer = type(
            "ThreadingWSGIServer", (ss.ThreadingMixIn, WSGIServer), {"daemon_threads": True}
        )
    server = WSGIServer((HOST, 0), QuietWSGIHandler)
    server.set_app(wsgi_app)
    assert server.get_app() is wsgi_app
    port = server.server_address[1]
    assert server.base_environ["SERVER_PORT"] == str(port)
    with background_server(server):
        status, headers, body = fetch(server, "GET", "/hello%20world?x=1&y=2")
        assert status == 200
        info = json.loads(body)
        assert info["REQUEST_METHOD"] == "GET"
        assert info["PATH_INFO"] == "/hello world"
        assert info["QUERY_STRING"] == "x=1&y=2"
        assert info["SERVER_PORT"] == str(port)
        assert info["SERVER_NAME"] == server.server_name
        assert info["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert info["REMOTE_ADDR"] == HOST
        assert info["GATEWAY_INTERFACE"] == "CGI/1.1"
        assert info["SCRIPT_NAME"] == ""
        assert info["body"] == ""
        assert headers["Server"].startswith("WSGIServer/")

        payload = "a=1&b=" + "z" * 100000
        conn = http_conn(server)
        try:
            conn.request(
                "POST",
                "/submit",
                body=payload.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            resp = conn.getresponse()
            assert resp.status == 200
            info = json.loads(resp.read())
        finally:
            conn.close()
        assert info["REQUEST_METHOD"] == "POST"
        assert info["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
        assert info["body"] == payload

        status, headers, body = fetch(server, "GET", "/missing")
        assert (status, body) == (404, b"not here")

        status, headers, body = fetch(server, "GET", "/chunks")
        assert (status, body) == (200, b"one two three")

        # An application error becomes a 500 from wsgiref's handler (which
        # logs the traceback to the handler's stderr), and the server goes on.
        status, headers, body = fetch(server, "GET", "/crash")
        assert status == 500

        status, headers, body = fetch(server, "GET", "/again")
        assert status == 200 and json.loads(body)["PATH_INFO"] == "/again"


def test_wsgi_concurrent_clients_on_threading_server(ss):
    WSGIServer = wsgi_server_class(ss)
    cls = type("ThreadingWSGIServer", (ss.ThreadingMixIn, WSGIServer), {"daemon_threads": True})
    server = cls((HOST, 0), QuietWSGIHandler)
    server.set_app(wsgi_app)
    results = []
    errors = []

    def client(n):
        try:
            for i in range(5):
                status, _, body = fetch(server, "GET", "/c%d/%d" % (n, i))
                results.append((status, json.loads(body)["PATH_INFO"]))
        except Exception as e:  # reported below
            errors.append(e)

    with background_server(server):
        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(results) == sorted((200, "/c%d/%d" % (n, i)) for n in range(8) for i in range(5))
