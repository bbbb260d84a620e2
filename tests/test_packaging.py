"""Packaging: what an install contains, and what the sdist and wheels are.

The first tests look at the fastserver this test run imports (an editable
install, a wheel, cibuildwheel's install).  The build tests build an sdist
from the checkout the tests come from, once, then wheels from that unpacked
sdist and installs of it with pip into fresh virtual environments, in
temporary directories.  They need the ``build`` package (the ``test`` extra
installs it) and the package index (pip's isolated build environment fetches
setuptools and Cython); they take about a minute on two cores, are marked
``slow`` (``-m "not slow"`` leaves them out of a quick run; .ci/run runs
them), and are skipped without ``build`` or a checkout.
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import fastserver

SOURCE_TREE = Path(__file__).resolve().parent.parent
#: Cython's output and sources: never installed, never in a wheel.
BUILD_ONLY_SUFFIXES = (".c", ".pyx", ".pxi", ".pxd", ".h", ".html")
#: A compiled extension module's file name ends so, on POSIX and on Windows.
EXTENSION_SUFFIXES = (".so", ".pyd")
#: The compiled core's type stub, in a wheel or an install: present exactly
#: when the compiled core is (setup.py leaves it out of a build without it).
CORE_STUB = "_core.pyi"
#: The one build input kept in the package directory of the source tree:
#: Cython reads fastserver._core's .pxd from the module's place in the
#: package.  An editable install imports that directory; wheels leave it out.
SOURCE_TREE_BUILD_INPUTS = {"_core.pxd"}
LICENSE_EXPRESSION = "MIT AND PSF-2.0"
#: C sources that are package data: the bench compiles them on the user's
#: machine (fastserver/bench/c_programs.py).
BENCH_C_SOURCES = {"fastserver/bench/loadgen.c", "fastserver/bench/refserver.c"}


def installed_distribution():
    return importlib.metadata.distribution("fastserver")


def is_regular_install(distribution):
    """True for metadata an installer wrote from a wheel.  Not for ``pip
    install -e`` (its metadata is from the last install, not necessarily
    from today's pyproject.toml), nor for a build's egg-info found on
    sys.path."""
    if distribution.read_text("INSTALLER") is None:
        return False
    direct_url = distribution.read_text("direct_url.json")
    return not (direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"))


# ---------------------------------------------------------------------------
# The installed package
# ---------------------------------------------------------------------------
def test_version_is_single_sourced():
    assert installed_distribution().version == fastserver.__version__


def test_installed_package_has_no_build_inputs():
    package_dir = Path(fastserver.__file__).resolve().parent
    leftovers = {path.name for path in package_dir.iterdir()
                 if path.name.endswith(BUILD_ONLY_SUFFIXES)}
    if package_dir == SOURCE_TREE / "src" / "fastserver":
        leftovers -= SOURCE_TREE_BUILD_INPUTS
    assert leftovers == set()


def test_installed_core_stub_only_beside_the_core():
    package_dir = Path(fastserver.__file__).resolve().parent
    if package_dir == SOURCE_TREE / "src" / "fastserver":
        pytest.skip("the source tree keeps the stub, whether the core is built or not")
    extensions = [path.name for path in package_dir.iterdir()
                  if path.name.startswith("_core.") and path.name.endswith(EXTENSION_SUFFIXES)]
    assert (package_dir / CORE_STUB).is_file() == bool(extensions), extensions


def test_installed_metadata():
    distribution = installed_distribution()
    if not is_regular_install(distribution):
        pytest.skip("not installed from a wheel (editable, or a source tree)")
    metadata = distribution.metadata
    assert metadata["License-Expression"] == LICENSE_EXPRESSION
    assert metadata["Requires-Python"] == ">=3.9"
    assert any(str(path).endswith("licenses/LICENSE") for path in distribution.files)
    scripts = [entry.value for entry in distribution.entry_points
               if entry.group == "console_scripts" and entry.name == "fastserver"]
    assert scripts == ["fastserver.cli:main"]
    assert "plot" in metadata.get_all("Provides-Extra")


# ---------------------------------------------------------------------------
# Building: the sdist from the checkout, wheels from the sdist
# ---------------------------------------------------------------------------
def has_distribution(name):
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_build = pytest.mark.skipif(
    not has_distribution("build") or not (SOURCE_TREE / "pyproject.toml").is_file(),
    reason="needs the `build` package and the source tree")
needs_a_compiled_core = pytest.mark.skipif(
    sys.platform == "win32", reason="no compiled core on Windows")
#: Bounds each build or install: a compiled build takes ~20 s on two cores.
BUILD_TIMEOUT = 300


def without_fastserver_settings(env=None):
    """The environment for a build or an install: only the test's own
    settings.  A FASTSERVER_NO_EXTENSIONS=1 this run was started with (to
    test the twin) is not the build's."""
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith("FASTSERVER_")}
    clean.update(env or {})
    return clean


def run_build(source, outdir, *options, env=None):
    # cwd: not the checkout, whose build/ directory would shadow the package.
    done = subprocess.run(
        [sys.executable, "-m", "build", *options, "--outdir", str(outdir), str(source)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=str(outdir),
        env=without_fastserver_settings(env))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def build_wheel(sdist_tree, workdir, env=None):
    """Build one wheel from a fresh copy of the unpacked sdist (a build
    leaves build/ behind, which the next one would reuse); returns the
    wheel's path and its file names."""
    source = workdir / "source"
    shutil.copytree(sdist_tree, source)
    run_build(source, workdir, "--wheel", env=env)
    (wheel,) = workdir.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return wheel, archive.namelist()


def core_extensions(names):
    """The compiled core's extension modules among a wheel's file names."""
    return [name for name in names
            if name.startswith("fastserver/_core.") and name.endswith(EXTENSION_SUFFIXES)]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """The sdist, built once for every test here."""
    outdir = tmp_path_factory.mktemp("sdist")
    run_build(SOURCE_TREE, outdir, "--sdist")
    (archive,) = outdir.glob("fastserver-*.tar.gz")
    return archive


@pytest.fixture(scope="module")
def sdist_tree(sdist, tmp_path_factory):
    """The sdist, unpacked: the tree every wheel here is built from."""
    destination = tmp_path_factory.mktemp("unpacked")
    # The "data" filter (3.12, and security releases before) refuses links
    # and absolute paths; it is the default from 3.14 on.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(sdist) as archive:
        archive.extractall(destination, **safe)
    (tree,) = destination.iterdir()
    return tree


@pytest.mark.slow
@needs_build
def test_sdist_carries_the_core_sources_and_no_generated_c(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for required in ("src/_core.pyx", "src/fastserver/_core.pxd", "src/fastserver/_core.pyi",
                     "src/includes/epoll.pxd", "src/includes/compat.h",
                     "src/includes/greenlet.h", "src/core/loop.pxi", "LICENSE", "setup.py",
                     "pyproject.toml", "tests/conftest.py", "tests/util.py", "tests/variants.py",
                     "bench/run.py", "bench/plot.py", "src/fastserver/bench/loadgen.c"):
        assert required in names
    assert "src/_core.c" not in names
    assert not [name for name in names if name.endswith((".so", ".pyd", ".pyc"))]


@pytest.mark.slow
@needs_build
@needs_a_compiled_core
def test_wheel_built_from_the_sdist(sdist_tree, tmp_path):
    wheel, names = build_wheel(sdist_tree, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert core_extensions(names), names
    assert "fastserver/" + CORE_STUB in names
    assert set(names) >= BENCH_C_SOURCES
    assert not [n for n in names if n.endswith(BUILD_ONLY_SUFFIXES)
                and n not in BENCH_C_SOURCES], names
    # pyproject.toml lists the packages by name: a subpackage missing there
    # is missing here, without a word from the build.
    package_dir = SOURCE_TREE / "src" / "fastserver"
    modules = ["fastserver/" + path.relative_to(package_dir).as_posix()
               for path in package_dir.rglob("*.py")]
    assert [m for m in modules if m not in names] == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert f"License-Expression: {LICENSE_EXPRESSION}".encode() in metadata
    assert f"Version: {fastserver.__version__}".encode() in metadata


@pytest.mark.slow
@needs_build
def test_no_extensions_build_is_a_pure_wheel(sdist_tree, tmp_path):
    """FASTSERVER_NO_EXTENSIONS=1: no compiler called (`false` would fail
    it), no extension module, and no stub for the module that is not there."""
    wheel, names = build_wheel(sdist_tree, tmp_path,
                               {"FASTSERVER_NO_EXTENSIONS": "1", "CC": "false"})
    platform = "win_" if sys.platform == "win32" else "any"  # setup.py: Windows' own tag
    assert f"-py3-none-{platform}" in wheel.name
    assert core_extensions(names) == []
    assert "fastserver/" + CORE_STUB not in names
    for kept in ("fastserver/_core_py.py", "fastserver/_typing.pyi", "fastserver/py.typed"):
        assert kept in names


# ---------------------------------------------------------------------------
# Installing from the sdist with pip, as a user without a C compiler would
# ---------------------------------------------------------------------------
def pip_install_into_new_venv(sdist, workdir, env):
    """``pip install <sdist>`` into a new virtual environment, with pip's
    default output; returns the venv's interpreter and pip's result.  The
    venv has no pip of its own: this run's pip installs into it (--python),
    which spares a copy of pip per test."""
    venv.EnvBuilder(with_pip=False).create(str(workdir / "venv"))
    bindir = "Scripts" if sys.platform == "win32" else "bin"
    python = workdir / "venv" / bindir / ("python.exe" if sys.platform == "win32" else "python")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-cache-dir",
         str(sdist)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=str(workdir),
        env=without_fastserver_settings(env))
    return python, done


@pytest.mark.slow
@needs_build
@needs_a_compiled_core
def test_pip_install_without_a_compiler_fails_and_says_why(sdist, tmp_path):
    """setup.py's CompiledCoreBuildExt: no silent fallback to the twin, and
    the way out in pip's default output."""
    _, done = pip_install_into_new_venv(sdist, tmp_path, {"CC": "false"})
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "fastserver's compiled core could not be built" in output, output[-3000:]
    assert "python3-dev" in output
    assert "FASTSERVER_NO_EXTENSIONS=1 pip install fastserver" in output


@pytest.mark.slow
@needs_build
def test_pip_install_of_the_pure_python_core_when_asked(sdist, tmp_path):
    python, done = pip_install_into_new_venv(
        sdist, tmp_path, {"CC": "false", "FASTSERVER_NO_EXTENSIONS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Run as installed, without the variable: the twin serves because no
    # core was built; the console script is there.
    core = subprocess.run(
        [str(python), "-c", "import fastserver; print(fastserver.CORE_IMPLEMENTATION)"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
        env=without_fastserver_settings())
    assert core.stdout.strip() == "python", core.stdout + core.stderr
    script = python.parent / ("fastserver.exe" if sys.platform == "win32" else "fastserver")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                             timeout=60, cwd=str(tmp_path), env=without_fastserver_settings())
    assert version.returncode == 0, version.stderr
    assert fastserver.__version__ in version.stdout
