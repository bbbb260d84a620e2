"""Build the compiled core, ``fastserver._core``, from ``src/_core.pyx``.

The metadata is in pyproject.toml; this file only describes the extension.

- ``FASTSERVER_NO_EXTENSIONS=1`` at build time: no extension, a pure wheel,
  without the core's type stub either (``fastserver/_core.pyi``).
- Windows: no extension (the core is POSIX-only); the wheel is tagged
  ``py3-none-win_<arch>`` so that it never stands in for a compiled wheel on
  another platform (a ``py3-none-any`` wheel on an index would be chosen over
  the sdist on every platform without a wheel of its own).
- No working C compiler, or no Python headers: the build fails, and says
  what is missing and how to install the pure-Python core instead
  (``CompiledCoreBuildExt`` says why it does not fall back on its own).
"""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

#: What a missing or broken C compiler raises (a missing compiler, missing
#: Python headers, an unsupported platform).  Cython's own errors are not
#: here: a .pyx that does not compile fails the build as it is.
COMPILER_ERRORS = (CCompilerError, ExecError, PlatformError)

WINDOWS = sys.platform == "win32"
NO_EXTENSIONS = bool(os.environ.get("FASTSERVER_NO_EXTENSIONS")) or WINDOWS

#: The compiled core's type stub: package data, which a wheel without the
#: core leaves out (a stub for a module that is not there would tell a type
#: checker it is).  The sdist carries it whatever the build (MANIFEST.in).
CORE_STUB = "_core.pyi"

COMPILE_FAILED = """
fastserver's compiled core could not be built:
    {error}
It needs a C compiler and the Python headers (for a system Python on
Debian or Ubuntu: apt-get install gcc python3-dev).  To install fastserver
without it, on its pure-Python core (the same API, slower), ask for that:
    FASTSERVER_NO_EXTENSIONS=1 pip install fastserver
"""


class CompiledCoreBuildExt(build_ext):
    """build_ext that fails, saying what is missing and how to do without
    it, when the C compiler does.

    Falling back to the pure-Python core on its own would go unnoticed:
    pip shows a build's output only when the build fails, so a warning
    printed here reaches no one, and whoever installs fastserver for its
    compiled core would find the slower twin serving, in production.
    A warning at import would come later still, in every process of the
    server.  So the install fails on the machine where a compiler can still
    be installed, and the pure-Python core is one variable away for those
    who want it.  Cython itself always runs (it is a build requirement), so
    what fails here is the C compiler or its headers.
    """

    def run(self):
        try:
            super().run()
        except COMPILER_ERRORS as exc:
            # setuptools prints a CompileError's text as the build's last
            # words, which pip shows in its own output.
            raise CompileError(COMPILE_FAILED.format(error=exc)) from exc


class BuildPy(build_py):
    """build_py that leaves the core's stub out of a build without the core."""

    def exclude_data_files(self, package, src_dir, files):
        files = super().exclude_data_files(package, src_dir, files)
        if NO_EXTENSIONS and package == "fastserver":
            stub = os.path.normpath(os.path.join(src_dir, CORE_STUB))
            files = [path for path in files if os.path.normpath(path) != stub]
        return files


def platform_tagged_pure_wheel():
    """bdist_wheel for a wheel without the extension, tagged for the
    platform it was built on (``py3-none-win_amd64``)."""
    from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1

    class PlatformTaggedPureWheel(bdist_wheel):
        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, platform = super().get_tag()
            return "py3", "none", platform

    return PlatformTaggedPureWheel


#: What Cython writes the core's C to.
CORE_C = "src/_core.c"
#: Inputs of the core that cythonize's own change tracking does not see: it
#: reads ``from includes cimport epoll, poll`` as a cimport of the package
#: alone, and looks for a module's .pxd beside its .pyx only, where Cython
#: reads fastserver._core's from the module's place in the package.  A
#: build after editing one of these would reuse the old C.
UNTRACKED_CYTHON_INPUTS = ["src/includes/*.pxd", "src/fastserver/_core.pxd"]
#: What the C compiler reads besides the generated C (cythonize no longer
#: finds compat.h on its own, for the same reason).
CORE_C_DEPENDS = ["src/includes/compat.h", "src/includes/greenlet.h"]


def core_c_is_stale():
    """Is the generated C older than an input cythonize does not track?"""
    try:
        generated = os.path.getmtime(CORE_C)
    except OSError:
        return False  # none yet: cythonize writes it anyway
    return any(os.path.getmtime(path) > generated
               for pattern in UNTRACKED_CYTHON_INPUTS for path in glob.glob(pattern))


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    core = Extension(
        "fastserver._core",
        sources=["src/_core.pyx"],
        include_dirs=["src"],
        depends=CORE_C_DEPENDS,
        extra_compile_args=["-O2"],
    )
    return cythonize(
        [core],
        include_path=["src"],
        force=core_c_is_stale(),
        compiler_directives={
            "language_level": "3",
            "embedsignature": True,
            "freethreading_compatible": True,
        },
        annotate=bool(os.environ.get("FASTSERVER_ANNOTATE")),
    )


commands = {"build_ext": CompiledCoreBuildExt, "build_py": BuildPy}
if WINDOWS:
    commands["bdist_wheel"] = platform_tagged_pure_wheel()

setup(ext_modules=extensions(), cmdclass=commands)
