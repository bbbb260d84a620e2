"""Packaging: what an install contains, and what the sdist and wheels are.

The first tests look at the fastserver this test run imports (an editable
install, a wheel, cibuildwheel's install).  The build tests build an sdist
from the checkout the tests come from and wheels from that unpacked sdist,
in temporary directories; they need the ``build`` package and access to the
package index (pip's isolated build environment fetches setuptools and
Cython), take ~30 s, and are skipped without ``build`` or a checkout
(``nox -s dist`` runs them).
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fastserver

SOURCE_TREE = Path(__file__).resolve().parent.parent
#: Cython's output and sources: never installed, never in a wheel.
BUILD_ONLY_SUFFIXES = (".c", ".pyx", ".pxi", ".pxd", ".h", ".html")
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
    reason="needs the `build` package and the source tree (nox -s dist runs these)")


def run_build(source, outdir, *options, env=None):
    # Only the test's own settings: a FASTSERVER_NO_EXTENSIONS=1 this run was
    # started with (to test the twin) is not the build's.
    build_env = {name: value for name, value in os.environ.items()
                 if not name.startswith("FASTSERVER_")}
    build_env.update(env or {})
    # cwd: not the checkout, whose build/ directory would shadow the package.
    done = subprocess.run(
        [sys.executable, "-m", "build", *options, "--outdir", str(outdir), str(source)],
        capture_output=True, text=True, timeout=300, cwd=str(outdir), env=build_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def build_wheel(sdist_tree, workdir, env=None):
    """Build one wheel from a fresh copy of the unpacked sdist (a build
    leaves build/ behind, which the next one would reuse); returns the
    wheel's path and the build's output."""
    source = workdir / "source"
    shutil.copytree(sdist_tree, source)
    done = run_build(source, workdir, "--wheel", env=env)
    (wheel,) = workdir.glob("*.whl")
    return wheel, done.stdout + done.stderr


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
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


@needs_build
def test_sdist_carries_the_core_sources_and_no_generated_c(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for required in ("src/_core.pyx", "src/fastserver/_core.pxd", "src/includes/epoll.pxd",
                     "src/includes/compat.h", "src/core/loop.pxi", "LICENSE", "setup.py",
                     "pyproject.toml", "tests/conftest.py", "tests/util.py", "tests/variants.py",
                     "bench/run.py", "bench/plot.py", "src/fastserver/bench/loadgen.c"):
        assert required in names
    assert "src/_core.c" not in names
    assert not [name for name in names if name.endswith((".so", ".pyd", ".pyc"))]


@needs_build
def test_wheel_built_from_the_sdist(sdist_tree, tmp_path):
    wheel, _ = build_wheel(sdist_tree, tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert [n for n in names if n.startswith("fastserver/_core.")
            and n.endswith((".so", ".pyd"))], names
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


@needs_build
def test_no_extensions_build_is_a_pure_wheel(sdist_tree, tmp_path):
    wheel, _ = build_wheel(sdist_tree, tmp_path, {"FASTSERVER_NO_EXTENSIONS": "1"})
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert not [n for n in archive.namelist() if n.startswith("fastserver/_core.")]


@needs_build
@pytest.mark.skipif(sys.platform == "win32", reason="no compiled core on Windows")
def test_build_without_a_working_compiler_falls_back_loudly(sdist_tree, tmp_path):
    """`false` as the C compiler: the build succeeds without the core and
    says so (tests/test_build.py then fails such an install)."""
    wheel, output = build_wheel(sdist_tree, tmp_path, {"CC": "false"})
    assert "fastserver's compiled core could not be built" in output
    with zipfile.ZipFile(wheel) as archive:
        assert not [n for n in archive.namelist() if n.startswith("fastserver/_core.")]
