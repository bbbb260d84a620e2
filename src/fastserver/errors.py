"""fastserver's public exceptions.

They live in a module of their own, below both cores, so that whichever
core raises one it is the same class; the package re-exports each of them
and names them as its own (``fastserver.LineTooLong`` in a traceback, see
``__init__.py``).
"""


class LineTooLong(ValueError):
    """``rfile.readline()`` (or iteration) found no newline within the
    reader's ``max_line_length`` bytes.  Those bytes were consumed; they are
    in ``data``, so nothing is lost (asyncio's StreamReader raises a
    ValueError for the same reason)."""

    def __init__(self, limit: int, data: bytes = b"") -> None:
        super().__init__(f"line longer than {limit} bytes (max_line_length)")
        self.limit = limit
        self.data = data
