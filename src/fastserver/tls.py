"""TLS for stream servers: set ``ssl_context`` on a server and every accepted
connection is served over TLS.  (``_settings.py`` checks the setting: a
server-side ``ssl.SSLContext``, on a stream server.)

The functions here take values and return results; the server classes
(``servers.py``) call them and call their own hooks on the outcome, so
this module never calls back into a server.  Where each step runs, and why
there:

- ``TCPServer.get_request()`` wraps the accepted socket, server side, with
  ``do_handshake_on_connect=False`` (:func:`wrap_accepted`); a connection
  that cannot even be wrapped goes to ``handle_tls_error`` and the loop
  sees the ConnectionAbortedError a failed accept() raises, which it
  ignores, as the stdlib's does.  Wrapping does
  no network I/O, so the loop never waits on a client, and from then on
  every hook (verify_request, process_request, the handler, shutdown_request)
  sees the same ``ssl.SSLSocket``.
- ``BaseServer.finish_request()`` completes the handshake, bounded by
  ``ssl_handshake_timeout``, before it constructs the handler
  (:func:`complete_handshake`).  finish_request is the one step that runs
  where the request is served in every concurrency model: in the loop for a
  synchronous server, in the request's thread for ThreadingMixIn, in the
  worker for a pool, in the child for ForkingMixIn, and inside a user's own
  process_request (which must call it).  Overriding process_request, the
  hook users replace most, therefore keeps the handshake in the right place.
  A user who replaces finish_request itself without calling the base method
  still gets TLS: OpenSSL completes the handshake at the handler's first
  read or write, only without the timeout, and a failure then reaches
  handle_error as any other exception of the handler would.
- A failed or timed-out handshake goes to
  ``server.handle_tls_error(request, client_address, exc)`` (by default one
  warning line, no traceback: :func:`log_tls_error`).  The handler never
  runs; finish_request returns and the caller's shutdown_request closes the
  connection, as for any request.

``ssl`` and ``logging`` are imported only when TLS is used: a plain server
does not pay for them at import time (an ``SSLSocket`` can only exist once
``ssl`` has been imported, so its absence from ``sys.modules`` answers
"is this a TLS connection?" for free).
"""
from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    from ._typing import RequestType, RetAddress


def wrap_accepted(ssl_context: ssl.SSLContext, request: socket.socket) -> ssl.SSLSocket:
    """``request`` wrapped in ``ssl_context``, server side, its handshake
    left for :func:`complete_handshake`.

    Raises OSError, with ``request``'s fd closed, when the connection cannot
    even be wrapped (the client already reset it, or sent data and closed).
    """
    import ssl

    if isinstance(request, ssl.SSLSocket):
        return request  # accepted from an SSLSocket listener: wrapped already
    try:
        # A client that reset the connection before it was accepted fails
        # here, and its fd is closed below.  (Left to wrap_socket, the
        # failure would come from inside the new SSLSocket, whose fd only
        # the garbage collector would close.)
        request.getpeername()
        return ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
    except OSError:
        request.close()  # the fd, unless wrap_socket had taken it over
        raise


def complete_handshake(request: RequestType, timeout: float | None) -> OSError | None:
    """Run the pending server-side handshake of ``request``, if it has one.

    Returns None when the request may go on to the handler: it is not a TLS
    connection, its handshake had been done, or it succeeded now; else the
    error that ended the handshake (the caller reports it).

    The handshake is bounded by ``timeout`` seconds as a whole (``ssl``
    measures one deadline across its reads and writes, so a client cannot
    stretch it by trickling bytes); ``None`` leaves the socket's own
    timeout in charge.  The socket's timeout is restored afterwards, so the
    handler sees the connection as it was accepted.
    """
    if type(request) is socket.socket:
        return None  # the plain case, decided without looking at ssl
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(request, ssl.SSLSocket):
        return None
    if request.version() is not None:
        return None  # handshake done already (e.g. a listener that does it on accept)
    try:
        previous_timeout = request.gettimeout()
        if timeout is not None:
            request.settimeout(timeout)
        try:
            request.do_handshake()
        finally:
            if timeout is not None:
                request.settimeout(previous_timeout)
    except OSError as exc:  # ssl.SSLError, a timeout, a reset: the client's trouble
        return exc
    return None


def log_tls_error(client_address: RetAddress, exc: BaseException) -> None:
    """One warning line on the ``fastserver.tls`` logger, without traceback.

    Failed handshakes are routine on a public port (scanners, a browser
    speaking plain HTTP, clients that distrust the certificate), so each is
    one line; with logging left unconfigured, Python prints warnings to
    stderr.
    """
    import logging

    logging.getLogger("fastserver.tls").warning(
        "TLS handshake with %s failed: %s: %s",
        describe_client(client_address),
        type(exc).__name__,
        exc,
    )


def describe_client(client_address: RetAddress) -> str:
    """``client_address`` for a log line: host:port for IP, else its repr
    (a Unix-socket client is usually unnamed, ``''``)."""
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        host, port = client_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return repr(client_address)
