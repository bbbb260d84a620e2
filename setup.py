"""Build the compiled core, ``fastserver._core``, from ``src/_core.pyx``.

Everything else is in pyproject.toml.  When no C compiler is available the
build fails loudly unless FASTSERVER_NO_EXTENSIONS=1 asks for the pure-Python
twin, so a wheel never silently ships without its core.
"""
import os
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("FASTSERVER_NO_EXTENSIONS")) or sys.platform == "win32"


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    core = Extension(
        "fastserver._core",
        sources=["src/_core.pyx"],
        include_dirs=["src"],
        extra_compile_args=["-O2"] if sys.platform != "win32" else [],
    )
    return cythonize(
        [core],
        include_path=["src"],
        compiler_directives={
            "language_level": "3",
            "embedsignature": True,
            "freethreading_compatible": False,
        },
        annotate=bool(os.environ.get("FASTSERVER_ANNOTATE")),
    )


setup(ext_modules=extensions())
