"""The version, in a module of its own so that setuptools reads it without
importing the package, and any module may import it."""

__version__ = "0.1.0"
