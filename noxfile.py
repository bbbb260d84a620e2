"""nox sessions: the test matrix on CPython 3.9-3.13, lint, types, packaging.

    nox                                  # every session below
    nox -s tests                         # 3.9 ... 3.13, compiled core and twin
    nox -s "tests-3.11(core='compiled')" -- -x tests/test_api.py
    nox -s lint typecheck dist

Interpreters come from pyenv when it has them ($PYENV_ROOT/versions/X.Y.Z,
the newest patch release of each X.Y), else from ``pythonX.Y`` on PATH.

The tests install fastserver from an sdist built first, never from the
checkout: that proves on every Python that the sdist builds from itself, and
the build (Cython's generated C included) happens in pip's temporary
directory instead of the working tree.  They then run the checkout's tests/
against the installed package (the src/ layout keeps the checkout's copy
off sys.path).
"""
import glob
import os
import re
import sys

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
nox.options.sessions = ["tests", "lint", "typecheck", "dist"]
nox.options.error_on_missing_interpreters = True  # a skipped Python is not a pass

CYTHON_SOURCES = ["src/_core.pyx", "src/fastserver/_core.pxd", "src/core/*.pxi",
                  "src/includes/*.pxd"]


def pyenv_bin_dirs(versions):
    """pyenv's bin directory for each X.Y in ``versions`` it has (the newest
    patch release)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    newest = {}
    for path in glob.glob(os.path.join(root, "versions", "*", "bin")):
        match = re.fullmatch(r"(\d+\.\d+)\.(\d+)", os.path.basename(os.path.dirname(path)))
        if match and match.group(1) in versions:
            version, patch = match.group(1), int(match.group(2))
            if version not in newest or patch > newest[version][0]:
                newest[version] = (patch, path)
    return [path for _, path in newest.values()]


# nox finds "3.11" as python3.11 on PATH: put pyenv's interpreters there.
os.environ["PATH"] = os.pathsep.join(pyenv_bin_dirs(PYTHONS) + [os.environ.get("PATH", "")])


def build_sdist(session):
    """Build the sdist into the session's temporary directory; its path."""
    session.install("build")
    outdir = session.create_tmp()
    for old in glob.glob(os.path.join(outdir, "fastserver-*")):
        if os.path.isfile(old):  # an sdist or a wheel of an earlier run
            os.remove(old)
    session.run("python", "-m", "build", "--sdist", "--outdir", outdir, ".", silent=True)
    (sdist,) = glob.glob(os.path.join(outdir, "fastserver-*.tar.gz"))
    return sdist


@nox.session(python=PYTHONS)
@nox.parametrize("core", ["compiled", "twin"])
def tests(session, core):
    """The test suite against an installed fastserver, per core.

    compiled: the normal install.  twin: built and run with
    FASTSERVER_NO_EXTENSIONS=1, the install a machine without a C compiler
    must ask for.  The slow tests build fastserver again from source, the
    same on every Python and core: `dist` runs them.
    """
    env = {"FASTSERVER_NO_EXTENSIONS": "1"} if core == "twin" else {}
    sdist = build_sdist(session)
    session.install(f"{sdist}[test]", env=env)
    session.run("python", "-c",
                "import fastserver, sys; print(fastserver.__file__, "
                "fastserver.CORE_IMPLEMENTATION, sys.version)", env=env)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                *(session.posargs or ["-m", "not slow", "tests"]), env=env)


@nox.session
def lint(session):
    """ruff on the Python code, cython-lint on the core."""
    session.install("ruff", "cython-lint")
    session.run("ruff", "check", *(session.posargs or ["."]))
    sources = [path for pattern in CYTHON_SOURCES for path in sorted(glob.glob(pattern))]
    session.run("cython-lint", *sources)


@nox.session
def typecheck(session):
    """mypy --strict on the package and examples/ (pyproject's [tool.mypy]
    files; the compiled core through _core.pyi)."""
    session.install("mypy")
    session.run("mypy", *session.posargs)


@nox.session
def dist(session):
    """The sdist, a wheel built from the unpacked sdist, and their checks.

    twine's metadata check, the wheel's file list (no Cython output, no
    sources), on Linux the manylinux tag auditwheel gives it, and
    tests/test_packaging.py against that wheel, installed.
    """
    session.install("build", "twine", "check-wheel-contents")
    sdist = build_sdist(session)
    outdir = os.path.dirname(sdist)
    unpacked = os.path.join(outdir, "unpacked")
    session.run("rm", "-rf", unpacked, external=True)
    os.makedirs(unpacked)
    session.run("tar", "-xzf", sdist, "-C", unpacked, external=True)
    (source,) = glob.glob(os.path.join(unpacked, "fastserver-*"))
    session.run("python", "-m", "build", "--wheel", "--outdir", outdir, source, silent=True)
    wheels = glob.glob(os.path.join(outdir, "fastserver-*.whl"))
    session.run("twine", "check", "--strict", sdist, *wheels)
    session.run("check-wheel-contents", *wheels)
    session.run("python", "-m", "zipfile", "-l", *wheels)
    if sys.platform.startswith("linux"):
        session.install("auditwheel")
        session.run("auditwheel", "show", *wheels)
    # The packaging tests: the installed wheel's metadata, and builds of
    # their own (the sdist's contents, wheels with and without the core).
    session.install(*[f"{wheel}[test]" for wheel in wheels])
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "tests/test_packaging.py")
