# The request handlers' own steps, compiled.  fastserver/handlers.py keeps
# the Python source of each (the twin's, and the specification); where the
# compiled core is built, the classes use these instead.  They are
# line-for-line the same: every attribute and method is looked up on the
# handler as the Python code does, so subclasses and instance attributes
# override them exactly as before.


def request_handler_init(self, request, client_address, server):
    """BaseRequestHandler.__init__"""
    self.request = request
    self.client_address = client_address
    self.server = server
    self.setup()
    try:
        self.handle()
    finally:
        self.finish()


def stream_handler_setup(self):
    """StreamRequestHandler.setup"""
    connection = self.connection = self.request
    timeout = self.timeout
    if timeout is not None:
        connection.settimeout(timeout)
    if self.disable_nagle_algorithm:
        connection.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, True)
    # The core's own sockets (a green one too) get the C file objects.
    plain = type(connection) is _plain_socket or type(connection) is _GreenSocket
    rbufsize = self.rbufsize
    max_line_length = self.max_line_length
    try:
        if plain and rbufsize != 0:
            self.rfile = SocketReader(connection, rbufsize, max_line_length)
        else:
            self.rfile = _py_open_reader(connection, rbufsize, max_line_length)
    except (TypeError, ValueError):
        # A bad max_line_length set on the instance: say which setting.
        _blame_setting(self, "max_line_length")
        raise
    wbufsize = self.wbufsize
    if wbufsize == 0:
        self.wfile = SocketWriter(connection) if plain else _PySocketWriter(connection)
    else:
        self.wfile = connection.makefile("wb", wbufsize)


def stream_handler_finish(self):
    """StreamRequestHandler.finish"""
    wfile = self.wfile
    if not wfile.closed:
        try:
            wfile.flush()
        except OSError:
            # A final socket error may have occurred here, such as
            # the local error ECONNABORTED.
            pass
    wfile.close()
    self.rfile.close()


def datagram_handler_setup(self):
    """DatagramRequestHandler.setup"""
    self.packet, self.socket = self.request
    self.rfile = _BytesIO(self.packet)
    self.wfile = _BytesIO()


def datagram_handler_finish(self):
    """DatagramRequestHandler.finish"""
    self.socket.sendto(self.wfile.getvalue(), self.client_address)
