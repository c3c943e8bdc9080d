"""No import circles in ``fedproto``: every module imports on its own, and no module imports itself back.

Two checks. The dynamic one imports each module alone, in an interpreter that has imported nothing of
``fedproto`` yet, so a module that only works when something else was imported first fails here. The
static one reads the ``import`` statements of every module and fails on any cycle: a circle that happens
to import today (thanks to the order of the lines) breaks the day someone moves a line.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fedproto"

#: Imports that may close a circle, each with the reason it is safe: (importer, imported) -> why.
#: Only imports inside functions or under ``if TYPE_CHECKING:`` may be listed; a module-level import
#: that closes a circle is always a failure. Keep this empty: a circle is better broken than explained.
ALLOWED_CIRCLE_EDGES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    """One import of a ``fedproto`` module by another, where it happens, and on which line."""

    importer: str
    imported: str
    where: str  # "module", "function" (runs when called) or "type-checking" (never runs)
    line: int


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by the name of its ``__init__``)."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it runs; class bodies run at import time, so they count."""

    def visit(node: ast.AST, where: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, where
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, "function" if where == "module" else where)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), "type-checking")
                for statement in child.orelse:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), where)
            else:
                yield from visit(child, where)

    yield from visit(tree, "module")


def _resolve(
    importer: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> list[str]:
    """The modules an import statement loads (``from a import b`` loads ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        parent = ".".join(base + ([node.module] if node.module else []))
    else:
        parent = node.module or ""
    found = [f"{parent}.{alias.name}" for alias in node.names if f"{parent}.{alias.name}" in known]
    return found if len(found) == len(node.names) else [*found, parent]


def import_edges() -> list[Edge]:
    """Every import of a ``fedproto`` module by a ``fedproto`` module.

    Only what a statement names counts, not the packages above it: ``import a.b.c`` also runs
    ``a/__init__`` and ``a/b/__init__``, but Python registers a package before running its
    ``__init__``, so a package that re-exports its submodules never breaks a submodule that imports a
    sibling by its full name. A module that reads a name from a half-initialised package
    (``from fedproto.server import Worker``) names the package, and is counted.
    """
    modules = module_files()
    known = set(modules)
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, where in _imports(tree):
            for imported in _resolve(name, path.name == "__init__.py", node, known):
                if imported in known and imported != name:
                    edges.append(Edge(name, imported, where, node.lineno))
    return edges


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    graph: dict[str, list[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, []).append(edge.imported)
        graph.setdefault(edge.imported, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _describe(component: list[str], edges: list[Edge]) -> str:
    members = set(component)
    lines = [
        f"  {e.importer}:{e.line} imports {e.imported} ({e.where})"
        for e in edges
        if e.importer in members and e.imported in members
    ]
    return "circle among " + ", ".join(component) + ":\n" + "\n".join(lines)


def test_no_import_circles() -> None:
    edges = [e for e in import_edges() if (e.importer, e.imported) not in ALLOWED_CIRCLE_EDGES]
    circles = _cycles(edges)
    assert not circles, "\n".join(_describe(c, edges) for c in circles)


def test_allowed_circle_edges_are_deferred_imports_that_exist() -> None:
    """An allowance is never for a module-level import, and never outlives the import it allows."""
    edges = {(e.importer, e.imported): e.where for e in import_edges()}
    for pair, why in ALLOWED_CIRCLE_EDGES.items():
        assert why, f"{pair} needs a reason"
        assert pair in edges, f"{pair} is allowed but no longer imported: remove the allowance"
        assert edges[pair] != "module", f"{pair} is a module-level import: break the circle instead"


def test_the_static_check_finds_a_circle() -> None:
    edges = [
        Edge("p.a", "p.b", "module", 1),
        Edge("p.b", "p.c", "function", 1),
        Edge("p.c", "p.a", "type-checking", 1),
        Edge("p.c", "p.d", "module", 2),
    ]
    assert _cycles(edges) == [["p.a", "p.b", "p.c"]]
    assert _cycles(edges[:2] + edges[3:]) == []


def test_the_static_check_reads_every_kind_of_import() -> None:
    tree = ast.parse(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from fedproto.server import worker\n"
        "class C:\n"
        "    from fedproto import codec\n"
        "def f():\n"
        "    from . import session\n"
    )
    found = [(where, node.lineno) for node, where in _imports(tree)]
    assert found == [("module", 1), ("module", 2), ("type-checking", 4), ("module", 6), ("function", 8)]
    known = {"fedproto.server.worker", "fedproto.codec", "fedproto.session", "fedproto.server"}
    nodes = [node for node, _ in _imports(tree)]
    assert _resolve("fedproto.x", False, nodes[2], known) == ["fedproto.server.worker"]
    assert _resolve("fedproto.x", False, nodes[3], known) == ["fedproto.codec"]
    assert _resolve("fedproto.x", False, nodes[4], known) == ["fedproto.session"]
    assert _resolve("fedproto.server", True, nodes[4], known) == ["fedproto.server"]


# -- each module alone in a fresh interpreter ---------------------------------------------------------

#: Imports each module named on the command line in a child forked from this interpreter, which has
#: imported the third-party libraries (argv[1], JSON) but nothing of fedproto, and prints the failures
#: as JSON {module: traceback}. Forking saves starting an interpreter and importing PyTorch once per
#: module (about 1.5 s each); what is checked, the order of fedproto's own imports, is the same.
_RUNNER = """
import importlib, json, os, sys, traceback
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # the module that needs it will report the failure
assert not any(m == "fedproto" or m.startswith("fedproto.") for m in sys.modules), "fedproto preloaded"
failures = {}
for name in sys.argv[2:]:
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        status = 0
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            status = 1
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if status:
        failures[name] = message or f"exit status {status}"
print(json.dumps(failures))
"""


def _third_party_imports() -> list[str]:
    """What fedproto's modules import at module level from outside fedproto, to load before forking."""
    names: set[str] = set()
    for path in module_files().values():
        for node, where in _imports(ast.parse(path.read_text())):
            if where != "module" or (isinstance(node, ast.ImportFrom) and node.level):
                continue
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            names.update(t for t in targets if t.split(".")[0] != PACKAGE)
    return sorted(names)


def _import_alone(modules: list[str], *, fork: bool, env: dict[str, str] | None = None) -> dict[str, str]:
    """{module: traceback} for each module that fails to import in an interpreter of its own."""
    if fork:
        preload = json.dumps(_third_party_imports())
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, preload, *modules],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
        return result
    failures = {}
    for name in modules:  # one interpreter per module, where there is no fork
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            failures[name] = done.stderr
    return failures


def test_every_module_imports_alone() -> None:
    # __main__ runs the command line when imported; what it imports is checked through fedproto.cli.
    modules = [name for name in module_files() if not name.endswith("__main__")]
    assert len(modules) > 20
    failures = _import_alone(modules, fork=hasattr(os, "fork"))
    assert not failures, "\n\n".join(f"{name}:\n{message}" for name, message in failures.items())


@pytest.mark.parametrize("fork", [pytest.param(True, id="fork"), pytest.param(False, id="interpreters")])
def test_importing_alone_reports_a_circle(tmp_path: Path, fork: bool) -> None:
    if fork and not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    (tmp_path / "circle_a.py").write_text("import circle_b\nVALUE = 1\n")
    (tmp_path / "circle_b.py").write_text("from circle_a import VALUE\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    failures = _import_alone(["circle_a", "circle_b"], fork=fork, env=env)
    # Alone, circle_b imports circle_a fully first and works; circle_a does not.
    assert list(failures) == ["circle_a"]
    assert "partially initialized module 'circle_a'" in failures["circle_a"]
