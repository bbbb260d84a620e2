"""TLS for stream servers (docs/tls.md): ``ssl_context`` wraps every
accepted connection; the handshake runs where the request is served, bounded
by ``ssl_handshake_timeout``; a failed handshake goes to
``handle_tls_error`` and never reaches the handler, the loop or other
clients.

The certificates are made here: a self-signed CA and a server certificate
it signed (for localhost, 127.0.0.1 and ::1), with the ``cryptography``
package when it is installed, else with the ``openssl`` command.
"""
import http.client
import http.server
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading

import pytest

from util import (
    HOST,
    TIMEOUT,
    background_server,
    open_fds,
    reap_children,
    recv_until_eof,
    short_tmpdir,
    tcp_connect,
    unix_connect,
    wait_until,
)

ssl = pytest.importorskip("ssl")

from fastserver import _plan  # noqa: E402

# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------


class Certificates:
    """A CA, a server certificate it signed, and a second CA nobody used."""

    def __init__(self, directory):
        self.directory = directory
        self.ca = os.path.join(directory, "ca.pem")
        self.other_ca = os.path.join(directory, "other-ca.pem")
        self.server_cert = os.path.join(directory, "server.pem")
        self.server_key = os.path.join(directory, "server.key")

    def server_context(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context

    def client_context(self, trust_other_ca=False):
        return ssl.create_default_context(cafile=self.other_ca if trust_other_ca else self.ca)


def generate_with_cryptography(certs):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def builder(subject, issuer, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def make_ca(common_name):
        key = ec.generate_private_key(ec.SECP256R1())
        usage = x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False,
        )
        cert = (
            builder(name(common_name), name(common_name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def write(path, data):
        with open(path, "wb") as f:
            f.write(data)

    ca_key, ca_cert = make_ca("fastserver test CA")
    _, other_ca_cert = make_ca("fastserver untrusted CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False,
        crl_sign=False, encipher_only=False, decipher_only=False,
    )
    alt_names = x509.SubjectAlternativeName([
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ])
    ca_key_id = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    server_cert = (
        builder(name("localhost"), ca_cert.subject, server_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(alt_names, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write(certs.ca, ca_cert.public_bytes(pem))
    write(certs.other_ca, other_ca_cert.public_bytes(pem))
    write(certs.server_cert, server_cert.public_bytes(pem))
    write(certs.server_key, server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


_OPENSSL_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {common_name}
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_OPENSSL_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def generate_with_openssl(certs):
    directory = certs.directory

    def path(name):
        return os.path.join(directory, name)

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    def make_ca(cert_path, key_path, common_name, config_name):
        with open(path(config_name), "w") as f:
            f.write(_OPENSSL_CA_CONFIG.format(common_name=common_name))
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key_path, "-out", cert_path, "-days", "2",
                "-config", path(config_name), "-extensions", "ca")

    make_ca(certs.ca, path("ca.key"), "fastserver test CA", "ca.cnf")
    make_ca(certs.other_ca, path("other-ca.key"), "fastserver untrusted CA", "other-ca.cnf")
    with open(path("server.ext"), "w") as f:
        f.write(_OPENSSL_SERVER_EXTENSIONS)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", certs.server_key, "-out", path("server.csr"),
            "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", path("server.csr"), "-CA", certs.ca,
            "-CAkey", path("ca.key"), "-set_serial", "2", "-days", "2",
            "-extfile", path("server.ext"), "-out", certs.server_cert)


def _have_cryptography():
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def certs():
    directory = tempfile.mkdtemp(prefix="fs-tls-")
    try:
        certs = Certificates(directory)
        if _have_cryptography():
            generate_with_cryptography(certs)
        elif shutil.which("openssl"):
            generate_with_openssl(certs)
        else:
            pytest.skip("no way to make a test certificate: neither the cryptography "
                        "package nor the openssl command is available")
        yield certs
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_openssl_generator(tmp_path):
    """The fallback generator makes certificates the ssl module accepts
    (the other one is checked by every test where cryptography exists)."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl command")
    certs = Certificates(str(tmp_path))
    generate_with_openssl(certs)
    certs.server_context()
    certs.client_context().load_verify_locations(certs.ca)


# ---------------------------------------------------------------------------
# Servers and clients
# ---------------------------------------------------------------------------


def echo_handler(fs):
    """Echo one line back; records what the handler saw of its connection."""

    class EchoHandler(fs.StreamRequestHandler):
        def handle(self):
            self.server.handled.append({
                "tls_version": self.request.version(),
                "timeout": self.request.gettimeout(),
                "thread": threading.current_thread().name,
            })
            self.wfile.write(self.rfile.readline())

    return EchoHandler


def tls_server(fs, base, certs, address=(HOST, 0), handshake_timeout=5.0,
               handler=None, **attributes):
    """A ``base`` server with ``ssl_context`` set whose handle_tls_error()
    records each failure in ``server.tls_errors``."""

    class Server(base):
        ssl_context = certs.server_context()
        ssl_handshake_timeout = handshake_timeout

        def handle_tls_error(self, request, client_address, exc):
            self.tls_errors.append(exc)

    for name, value in attributes.items():
        setattr(Server, name, value)
    server = Server(address, handler or echo_handler(fs))
    server.tls_errors = []
    server.handled = []
    return server


def tls_echo(certs, address, line=b"hello over TLS\n", family=socket.AF_INET):
    """One line through the echo server over a new TLS connection."""
    raw = unix_connect(address) if family == socket.AF_UNIX else tcp_connect(address)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(line)
        return recv_until_eof(sock)


def read_to_close(sock):
    """What the server sends before it closes (a reset counts as closed)."""
    try:
        return recv_until_eof(sock)
    except ConnectionResetError:
        return b""


class PlaintextClient:
    """Speaks plain HTTP to the TLS port."""

    expected_error = ssl.SSLError

    def start(self, certs, address):
        self.sock = tcp_connect(address)
        self.sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")

    def finish(self):
        with self.sock:
            assert b"HTTP" not in read_to_close(self.sock)


class SilentClient:
    """Connects and sends nothing: the handshake times out."""

    expected_error = socket.timeout

    def start(self, certs, address):
        self.sock = tcp_connect(address)

    def finish(self):
        with self.sock:
            assert read_to_close(self.sock) == b""


class DistrustfulClient:
    """Trusts another CA: rejects the server's certificate and aborts."""

    expected_error = ssl.SSLError

    def start(self, certs, address):
        raw = tcp_connect(address)
        context = certs.client_context(trust_other_ca=True)
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="localhost")
        raw.close()

    def finish(self):
        pass


BAD_CLIENTS = [PlaintextClient, SilentClient, DistrustfulClient]


# ---------------------------------------------------------------------------
# Serving over TLS
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("threading_", [False, True], ids=["sync", "threading"])
def test_echo_over_tls(fs, certs, threading_):
    base = fs.ThreadingTCPServer if threading_ else fs.TCPServer
    before = open_fds()
    server = tls_server(fs, base, certs, handshake_timeout=0.5)
    with background_server(server):
        for n in range(3):
            line = b"line %d\n" % n
            assert tls_echo(certs, server.server_address, line) == line
    assert open_fds() == before
    assert server.tls_errors == []
    assert len(server.handled) == 3
    for seen in server.handled:
        assert seen["tls_version"] is not None  # the handshake was done before the handler
        assert seen["timeout"] is None  # the handshake's timeout did not stay behind
        # The handshake and the handler ran in the request's thread, not the loop's.
        assert (seen["thread"] == "serve_forever") != threading_


def test_echo_over_tls_unix_stream(fs, certs):
    with short_tmpdir() as directory:
        path = os.path.join(directory, "tls.sock")
        server = tls_server(fs, fs.ThreadingUnixStreamServer, certs, address=path)
        with background_server(server):
            reply = tls_echo(certs, path, b"over a Unix socket\n", family=socket.AF_UNIX)
        assert reply == b"over a Unix socket\n"
        assert server.tls_errors == []


def test_tls_version_and_peer_certificate(fs, certs):
    """The handler works with the SSLSocket: a client certificate requested by
    the context is visible there."""
    seen = {}

    class Handler(fs.BaseRequestHandler):
        def handle(self):
            seen["cipher"] = self.request.cipher()
            seen["is_tls"] = isinstance(self.request, ssl.SSLSocket)
            self.request.sendall(b"ok")

    server = tls_server(fs, fs.TCPServer, certs, handler=Handler)
    with background_server(server):
        raw = tcp_connect(server.server_address)
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            assert recv_until_eof(sock) == b"ok"
    assert seen["is_tls"] and seen["cipher"] is not None


def https_server_class(fs, threading_):
    """http.server.HTTPServer (or ThreadingHTTPServer) built on ``fs``, as
    the stdlib builds it."""

    class HTTPServer(fs.TCPServer):
        allow_reuse_address = True

        def server_bind(self):
            fs.TCPServer.server_bind(self)
            host, port = self.server_address[:2]
            self.server_name = socket.getfqdn(host)
            self.server_port = port

    if threading_:
        return type("ThreadingHTTPServer", (fs.ThreadingMixIn, HTTPServer),
                    {"daemon_threads": True})
    return HTTPServer


class HelloHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests on one TLS connection

    def do_GET(self):
        body = b"hello from " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.mark.parametrize("threading_", [False, True], ids=["HTTPServer", "ThreadingHTTPServer"])
def test_https_with_http_server(fs, certs, threading_):
    server_class = https_server_class(fs, threading_)
    server = tls_server(fs, server_class, certs, handler=HelloHandler)
    with background_server(server):
        host, port = server.server_address
        connection = http.client.HTTPSConnection(
            host, port, timeout=TIMEOUT, context=certs.client_context())
        try:
            for path in ("/one", "/two"):
                connection.request("GET", path)
                response = connection.getresponse()
                assert response.status == 200
                assert response.read() == b"hello from " + path.encode()
        finally:
            connection.close()
    assert server.tls_errors == []


def test_finish_request_override_still_gets_tls(fs, certs):
    """A finish_request that never calls the base method: OpenSSL completes
    the handshake at the handler's first read, so the client is still
    served over TLS (only without ssl_handshake_timeout)."""

    class Server(fs.TCPServer):
        def finish_request(self, request, client_address):
            self.RequestHandlerClass(request, client_address, self)

    server = tls_server(fs, Server, certs)
    with background_server(server):
        assert tls_echo(certs, server.server_address) == b"hello over TLS\n"
    # The handler started before any handshake; its first read did it.
    assert server.handled[0]["tls_version"] is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_forking_server_handshakes_in_the_child(fs, certs):
    """ForkingMixIn: the handshake runs in the child, so a bad client costs
    the parent nothing."""

    class Handler(fs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(b"%d %s" % (os.getpid(), self.request.version().encode()))

    server = tls_server(fs, fs.ForkingTCPServer, certs, handler=Handler)
    server.timeout = TIMEOUT
    address = server.server_address
    try:
        with tcp_connect(address) as plaintext:
            plaintext.sendall(b"GET / HTTP/1.0\r\n\r\n")
            server.handle_request()  # forks; the child fails the handshake
            assert b"HTTP" not in read_to_close(plaintext)
        raw = tcp_connect(address)
        server.handle_request()  # forks; the child completes the handshake
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            pid, version = recv_until_eof(sock).split()
        assert int(pid) != os.getpid() and version.startswith(b"TLS")
    finally:
        server.server_close()  # waits for the children (block_on_close)
        reap_children()


# ---------------------------------------------------------------------------
# Failed handshakes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_client", BAD_CLIENTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("threading_", [False, True], ids=["sync", "threading"])
def test_failed_handshake(fs, certs, bad_client, threading_):
    """The hook hears of it, the handler never runs, the connection is
    closed, no fd stays open, and a good client is served (at the same time
    by a threading server, right after by a synchronous one)."""
    base = fs.ThreadingTCPServer if threading_ else fs.TCPServer
    before = open_fds()
    server = tls_server(fs, base, certs, handshake_timeout=0.3)
    with background_server(server):
        client = bad_client()
        client.start(certs, server.server_address)
        assert tls_echo(certs, server.server_address) == b"hello over TLS\n"
        assert wait_until(lambda: server.tls_errors, TIMEOUT)
        client.finish()
        assert tls_echo(certs, server.server_address) == b"hello over TLS\n"
    assert open_fds() == before
    assert len(server.tls_errors) == 1
    assert isinstance(server.tls_errors[0], client.expected_error)
    assert len(server.handled) == 2  # the good clients only


def test_stalled_handshake_does_not_hold_other_clients(fs, certs):
    """A client stuck in its handshake (no timeout at all here) holds only its
    own thread: others are served meanwhile; when it hangs up, the hook
    hears of it."""
    before = open_fds()
    server = tls_server(fs, fs.ThreadingTCPServer, certs, handshake_timeout=None)
    with background_server(server):
        with tcp_connect(server.server_address):  # connected, then silent
            for _ in range(3):
                assert tls_echo(certs, server.server_address) == b"hello over TLS\n"
            assert server.tls_errors == []  # still waiting on the stalled client
        assert wait_until(lambda: server.tls_errors, TIMEOUT)
    assert open_fds() == before
    assert len(server.handled) == 3


@pytest.mark.parametrize("with_data", [False, True], ids=["empty", "with-data"])
def test_client_reset_before_accept(fs, certs, with_data):
    """A client gone (RST) before its connection is accepted: reported,
    closed at once, and the server goes on."""
    before = open_fds()
    server = tls_server(fs, fs.TCPServer, certs)
    try:
        client = tcp_connect(server.server_address)
        if with_data:
            client.sendall(b"\x16\x03\x01 half a ClientHello")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # an RST, not a FIN
        server.timeout = TIMEOUT
        server.handle_request()
        assert len(server.tls_errors) == 1 and isinstance(server.tls_errors[0], OSError)
        assert server.handled == []
        with background_server(server, close=False):
            assert tls_echo(certs, server.server_address) == b"hello over TLS\n"
    finally:
        server.server_close()
    assert open_fds() == before


def test_default_hook_logs_one_line(fs, certs, caplog):
    """The default handle_tls_error: one warning on fastserver.tls, no
    traceback, for the common "plain HTTP on the TLS port"."""

    class Server(fs.TCPServer):
        ssl_context = certs.server_context()

    server = Server((HOST, 0), echo_handler(fs))
    server.handled = []
    with caplog.at_level(logging.WARNING, logger="fastserver.tls"):
        with background_server(server):
            client = PlaintextClient()
            client.start(certs, server.server_address)
            client.finish()  # the server closed it: the hook has run
    records = [r for r in caplog.records if r.name == "fastserver.tls"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING and record.exc_info is None
    message = record.getMessage()
    assert "TLS handshake with 127.0.0.1:" in message and "SSLError" in message
    assert "\n" not in message
    assert server.handled == []


# ---------------------------------------------------------------------------
# The fast-path rule and misuse
# ---------------------------------------------------------------------------


def test_plan_takes_the_python_path_for_tls(fs, certs):
    """With ssl_context set, accept and finish_request are Python calls (the
    wrap and the handshake live there); without it, the core may do both."""
    plain = fs.TCPServer((HOST, 0), echo_handler(fs))
    tls = tls_server(fs, fs.TCPServer, certs)
    try:
        plain_plan, tls_plan = _plan.plan_for(plain), _plan.plan_for(tls)
        assert plain_plan.finish_default and plain_plan.accept == "stream"
        assert tls_plan.accept == "call" and tls_plan.listener is None
        assert not tls_plan.finish_default
    finally:
        plain.server_close()
        tls.server_close()


def test_ssl_context_on_a_datagram_server_is_refused(fs, certs):
    """Plaintext where TLS was asked for would be worse than an error: where
    the class is defined, or, set later, when the loop starts."""
    with pytest.raises(ValueError, match=r"^Server\.ssl_context is set, but TLS needs a stream"):

        class Server(fs.UDPServer):
            ssl_context = certs.server_context()

    with fs.UDPServer((HOST, 0), fs.DatagramRequestHandler) as server:
        server.ssl_context = certs.server_context()
        with pytest.raises(ValueError, match=r"^UDPServer\.ssl_context is set, but TLS needs"):
            server.serve_forever(poll_interval=0.05)
