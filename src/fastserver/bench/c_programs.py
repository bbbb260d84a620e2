"""The bench's C programs, compiled on first use into a cache.

The load generator (``loadgen.c``) and the C reference server
(``refserver.c``) ship as sources beside this module, so that an installed
wheel can run the bench: a binary built for one machine would not do for
every machine a wheel installs on.  ``build()`` compiles one with the C
compiler in ``$CC`` (else ``cc``) into ``$XDG_CACHE_HOME/fastserver/bench``
(``~/.cache/fastserver/bench`` when that is unset), under a name keyed by a
hash of the source, the flags and the compiler: an edited source or another
compiler gets a build of its own, and a binary is never used for a source
it was not built from.  The binary is compiled under a temporary name and
renamed into place, so a bench never runs another's half-written file.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
CFLAGS = ("-O2", "-std=c99", "-Wall")
#: How long a compiler may take to say its version or build one program.
COMPILER_TIMEOUT = 120


@dataclass(frozen=True)
class CProgram:
    name: str     # the binary's name, before the key
    what: str     # what messages call it
    source: Path


LOADGEN = CProgram("loadgen", "the load generator", SOURCE_DIR / "loadgen.c")
REFSERVER = CProgram("refserver", "the C reference server", SOURCE_DIR / "refserver.c")


class BuildError(Exception):
    """A program could not be built.  The first line says what is needed;
    the compiler's own output, if it printed any, follows."""


def compiler_command() -> list[str]:
    """``$CC`` split as a shell would split it (``ccache gcc``), else ``cc``."""
    return shlex.split(os.environ.get("CC", "")) or ["cc"]


def cache_dir() -> Path:
    """Where the binaries go.  A relative ``$XDG_CACHE_HOME`` is ignored, as
    the XDG base directory specification says."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "fastserver" / "bench"


def build(program: CProgram) -> str:
    """The path of ``program``'s binary for its current source and the
    current compiler, compiled now unless the cache has it."""
    compiler = compiler_command()
    found = shutil.which(compiler[0])
    if found is None:
        raise BuildError(f"building {program.what} needs a C compiler, and "
                         f"{compiler[0]!r} was not found: install gcc or clang, "
                         "or set CC to a C compiler")
    command = [found, *compiler[1:]]
    source = program.source.read_bytes()
    binary = cache_dir() / f"{program.name}-{build_key(source, command)}"
    if binary.is_file():
        return str(binary)
    try:
        binary.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f".{binary.name}.", dir=binary.parent)
        os.close(handle)
    except OSError as exc:
        raise BuildError(f"cannot write {program.what} to {binary.parent}: {exc.strerror}; "
                         "set XDG_CACHE_HOME to a writable directory") from None
    try:
        done = subprocess.run([*command, *CFLAGS, "-o", partial, str(program.source)],
                              capture_output=True, text=True, timeout=COMPILER_TIMEOUT)
        if done.returncode != 0:
            said = (done.stdout + done.stderr).strip()
            raise BuildError(
                f"building {program.what} needs a working C compiler: "
                f"{shlex.join(compiler)} failed on {program.source.name} "
                f"(exit status {done.returncode})" + (f"; it said:\n{said}" if said else ""))
        os.replace(partial, binary)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return str(binary)


def build_key(source: bytes, command: list[str]) -> str:
    """A short hash of what the binary depends on: the source, the flags,
    the compiler (its path, its arguments, the version it reports) and the
    machine it compiles for."""
    digest = hashlib.sha256()
    for part in (source, *(arg.encode() for arg in (*command, *CFLAGS)),
                 compiler_version(command).encode(), platform.machine().encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:16]


def compiler_version(command: list[str]) -> str:
    """What ``CC --version`` prints (empty if it prints nothing or fails:
    the compile then tells what is wrong)."""
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True,
                              timeout=COMPILER_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr
