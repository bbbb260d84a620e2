"""The package is a one-way stack of modules (ARCHITECTURE.md, "Layers").

- Every module imports alone, in a fresh interpreter with warnings as
  errors: none relies on another having been imported first, so the order
  of the imports in ``__init__.py`` cannot matter.
- Run-time imports (module level and inside functions; ``TYPE_CHECKING``
  blocks aside) only go down the stack, and the whole import graph, type
  checking included, has no cycle.
- The compiled core loads without its pure-Python twin.
"""
import ast
import os
import re
import subprocess
import sys
import sysconfig

import pytest

import fastserver
from fastserver import _engine

PACKAGE_DIR = os.path.dirname(fastserver.__file__)
SOURCE_DIR = os.path.dirname(PACKAGE_DIR)  # src/ in a checkout

#: The stack, bottom first.  A module may import, at run time, only modules
#: listed before it.  Each group is one layer of ARCHITECTURE.md's diagram.
LAYERS = [
    # leaves: facts, the contract, the Python stream objects, the registry,
    # and helpers that take values and never call back into a server
    ["_version", "_forksafe", "_sockets", "errors", "connections", "_contract", "_settings",
     "_streams", "tls", "_quiet", "inherit"],
    # the two cores
    ["_core_py", "_core"],
    # the planner and the engine (which core serves, each server's state)
    ["_plan", "_engine"],
    # the API: socketserver's classes
    ["mixins", "servers", "handlers"],
    # the extras
    ["pool", "green", "workers.exits", "workers.listeners", "workers.supervisor",
     "workers.mixin", "workers", "__init__"],
    # the benchmark suite, a user of the public package (``import fastserver``),
    # and the command line that runs it
    ["bench", "bench.options", "bench.c_programs", "bench.plot", "bench.servers",
     "bench.shutdown_latency", "bench.idle_memory", "bench.run", "cli", "__main__"],
]
ORDER = [name for layer in LAYERS for name in layer]


def package_modules():
    """Every module of the package, as its name inside the package
    ("servers", "workers.supervisor"), from the files on disk; the compiled
    core by its stub, ``_core.pyi``."""
    names = []
    for directory, _, files in os.walk(PACKAGE_DIR):
        relative = os.path.relpath(directory, PACKAGE_DIR)
        prefix = "" if relative == "." else relative.replace(os.sep, ".") + "."
        if "__pycache__" in relative:
            continue
        for file in files:
            if file.endswith(".py") or file == "_core.pyi":
                stem = file.rsplit(".", 1)[0]
                if stem == "__init__" and prefix:
                    names.append(prefix[:-1])
                else:
                    names.append(prefix + stem)
    return sorted(names)


def rank(module):
    """The position of ``module`` (or of its package) in the stack."""
    for candidate in (module, module.split(".")[0]):
        if candidate in ORDER:
            return ORDER.index(candidate)
    raise AssertionError(f"fastserver.{module} is not placed in tests/test_layers.py's LAYERS")


def _in_type_checking(node, parents):
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If):
            test = node.test
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                return True
    return False


def imports_of(module):
    """``[(imported module, at run time?)]`` of fastserver modules that
    ``module``'s source imports."""
    path = os.path.join(PACKAGE_DIR, *module.split(".")) + ".py"
    if module == "_core":  # what the type checker reads for the compiled core
        path = os.path.join(PACKAGE_DIR, "_core.pyi")
    if not os.path.exists(path):
        path = os.path.join(PACKAGE_DIR, *module.split("."), "__init__.py")
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    # The package a relative import starts from ("" for fastserver itself).
    if path.endswith("__init__.py"):
        package = "" if module == "__init__" else module
    else:
        package = module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
                targets = [".".join(filter(None, [stem, alias.name])) for alias in node.names]
                if node.module:
                    targets.append(stem)
            elif node.module and node.module.split(".")[0] == "fastserver":
                rest = node.module[len("fastserver"):].lstrip(".")
                targets = [rest] + [".".join(filter(None, [rest, alias.name]))
                                    for alias in node.names]
        runtime = not _in_type_checking(node, parents)
        for target in targets:
            if target.startswith("fastserver."):
                target = target[len("fastserver."):]
            elif target in ("fastserver", ""):  # the package itself: its __init__
                target = "__init__"
            found.append((target, runtime))
    known = set(package_modules())
    return [(target, runtime) for target, runtime in found if target in known]


def compiled_core_imports():
    """The fastserver modules the compiled core's sources import."""
    paths = [os.path.join(SOURCE_DIR, "_core.pyx")]
    for directory in ("core", "includes"):
        folder = os.path.join(SOURCE_DIR, directory)
        if os.path.isdir(folder):
            paths += [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                      if f.endswith((".pxi", ".pxd", ".pyx"))]
    pattern = re.compile(r"^\s*(?:from\s+fastserver\.?([\w.]*)\s+(?:c?import)\s+([\w, ]+)"
                         r"|import\s+fastserver\.([\w.]+))", re.M)
    found = set()
    for path in paths:
        with open(path, encoding="utf-8") as file:
            for match in pattern.finditer(file.read()):
                module = match.group(1) or match.group(3) or ""
                if module:
                    found.add(module)
                else:
                    found.update(name.split(" as ")[0].strip()
                                 for name in match.group(2).split(","))
    return found


needs_source = pytest.mark.skipif(
    not os.path.exists(os.path.join(SOURCE_DIR, "_core.pyx")),
    reason="the compiled core's sources are not beside the package (installed from a wheel)",
)


def test_the_package_does_not_load_the_bench():
    """The benchmark suite sits on top: importing fastserver, or any module
    of the core and the API, never loads it."""
    code = ("import sys, fastserver, fastserver.workers, fastserver.pool\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastserver.bench')))\n")
    result = _run_isolated(code)
    assert result.returncode == 0 and result.stdout == "[]\n", result.stderr


def test_every_module_is_placed_in_the_stack():
    for module in package_modules():
        rank(module)


@pytest.mark.parametrize("module", package_modules())
def test_run_time_imports_go_down_the_stack(module):
    upward = [target for target, runtime in imports_of(module)
              if runtime and target != module and rank(target) >= rank(module)
              and not target.startswith(module + ".")]
    assert not upward, f"fastserver.{module} imports {upward} at run time, above or beside it"


@needs_source
def test_the_compiled_core_imports_leaves_only():
    leaves = set(LAYERS[0])
    imported = compiled_core_imports()
    assert imported, "no import found: the pattern no longer matches the core's sources"
    assert imported <= leaves, f"the compiled core imports {imported - leaves}"


def test_no_import_cycle_even_for_the_type_checker():
    graph = {module: {target for target, _ in imports_of(module)
                      if target != module and not target.startswith(module + ".")
                      and not module.startswith(target + ".")}
             for module in package_modules()}
    # __init__ re-exports everything and nothing imports it back.
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        if state.get(module) == "active":
            cycle = path[path.index(module):] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        state[module] = "active"
        for target in sorted(graph.get(module, ())):
            visit(target, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def _run_isolated(code):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-I", "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("module", [m for m in package_modules() if m != "__main__"])
def test_each_module_imports_alone(module):
    if module == "_core" and _engine.compiled_core is None:
        pytest.skip("compiled core not available")
    name = "fastserver" if module == "__init__" else f"fastserver.{module}"
    result = _run_isolated(f"import {name}")
    assert result.returncode == 0, result.stderr


def _init_imports():
    """The modules ``__init__.py`` imports names from, in its order."""
    with open(os.path.join(PACKAGE_DIR, "__init__.py"), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    modules = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
                and node.module not in modules):
            modules.append(node.module)
    return modules


@pytest.mark.parametrize("order", ["reversed", "as written"])
def test_the_order_of_the_init_imports_does_not_matter(order):
    """``__init__.py``'s imports, run in another order in a package whose
    ``__init__`` does not run, import the same names: no module relies on
    another having been imported first."""
    modules = _init_imports()
    assert "servers" in modules and "handlers" in modules
    if order == "reversed":
        modules.reverse()
    code = (
        "import os, sys, types\n"
        "package = types.ModuleType('fastserver')\n"
        "package.__path__ = [os.environ['FASTSERVER_PACKAGE_DIR']]\n"
        "sys.modules['fastserver'] = package\n"
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('fastserver.' + name)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, FASTSERVER_PACKAGE_DIR=PACKAGE_DIR)
    result = subprocess.run([sys.executable, "-I", "-W", "error", "-c", code],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded build only (3.13t and later)")
@pytest.mark.parametrize("core", ["compiled", "twin"])
def test_no_module_turns_the_gil_back_on(core):
    """On a free-threaded build, importing any module of the package, with
    either core, leaves the GIL off (and warns of nothing: -W error)."""
    if core == "compiled" and _engine.compiled_core is None:
        pytest.skip("compiled core not available")
    names = ["fastserver" if m == "__init__" else f"fastserver.{m}"
             for m in package_modules() if m != "__main__"]
    if core == "twin":
        names.remove("fastserver._core")
    code = "import sys\n" + "".join(f"import {name}\n" for name in names) + (
        "assert not sys._is_gil_enabled(), 'the GIL was turned back on'\n"
        "import fastserver._engine as e\n"
        "print(e.CORE_IMPLEMENTATION)\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHON_GIL", "FASTSERVER_NO_EXTENSIONS")}
    if core == "twin":
        env["FASTSERVER_NO_EXTENSIONS"] = "1"
    result = subprocess.run([sys.executable, "-I", "-W", "error", "-c", code],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("c" if core == "compiled" else "python")


@pytest.mark.skipif(_engine.compiled_core is None, reason="compiled core not available")
def test_the_compiled_core_loads_without_the_twin():
    code = """
import importlib.abc, sys

class NoTwin(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fastserver._core_py":
            raise ImportError("the twin is absent")
        return None

sys.meta_path.insert(0, NoTwin())
import importlib.util, os
# Load fastserver/_core alone, without running the package's __init__
# (which imports the twin for the fallback).
import types
package = types.ModuleType("fastserver")
package.__path__ = [os.environ["FASTSERVER_PACKAGE_DIR"]]
sys.modules["fastserver"] = package
from fastserver import _core
waker = _core.Waker(); waker.wake(); waker.close()
assert "fastserver._core_py" not in sys.modules
print("ok")
"""
    env = dict(os.environ, FASTSERVER_PACKAGE_DIR=PACKAGE_DIR)
    result = subprocess.run([sys.executable, "-I", "-W", "error", "-c", code],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
