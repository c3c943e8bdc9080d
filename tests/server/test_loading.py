"""Loading a worker (``--worker MODULE:FACTORY``) and methods (``--methods MODULE``) from user code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import fedproto
from fedproto.errors import WorkerLoadError
from fedproto.server.loading import import_user_module, load_methods, load_worker

REPO = Path(__file__).resolve().parents[2]

WORKERS = """
import fedproto
from sibling_helpers import COLONY


class Colony(fedproto.Worker):
    def __init__(self) -> None:
        super().__init__("colony")

    @fedproto.rpc
    def get_colony_id(self) -> int:
        return COLONY


def make_worker() -> fedproto.Worker:
    return Colony()


def make_nothing() -> int:
    return 3


def make_broken() -> fedproto.Worker:
    raise RuntimeError("no colony today")


ready = fedproto.Worker("ready")
not_a_worker = 42
"""

METHODS = """
import fedproto
from other_methods import imported_marked


@fedproto.rpc
def first(x: int) -> int:
    return x + 1


@fedproto.rpc(name="second_name", description="the second")
async def second() -> str:
    return "two"


def unmarked() -> None:
    pass


class Holder:
    @fedproto.rpc
    def inside(self) -> None:
        pass
"""

OTHER = """
import fedproto


@fedproto.rpc
def imported_marked() -> None:
    pass
"""


@pytest.fixture
def code(tmp_path: Path) -> Iterator[Path]:
    """A directory of user modules; the modules and sys.path entries they add are removed afterwards."""
    (tmp_path / "user_workers.py").write_text(WORKERS)
    (tmp_path / "sibling_helpers.py").write_text("COLONY = 7\n")
    (tmp_path / "user_methods.py").write_text(METHODS)
    (tmp_path / "other_methods.py").write_text(OTHER)
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('bad module')\n")
    (tmp_path / "missing_dependency.py").write_text("import no_such_dependency_anywhere\n")
    path, modules = list(sys.path), set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            del sys.modules[name]


def test_a_factory_in_a_py_file_imports_its_neighbours(code: Path) -> None:
    worker = load_worker(f"{code / 'user_workers.py'}:make_worker")
    assert worker.id == "colony" and "get_colony_id" in worker.methods


def test_a_worker_instance_and_a_worker_subclass(code: Path) -> None:
    assert load_worker(f"{code / 'user_workers.py'}:ready").id == "ready"
    worker = load_worker(f"{code / 'user_workers.py'}:Colony")
    assert type(worker).__name__ == "Colony"


def test_an_importable_module_name(code: Path) -> None:
    sys.path.insert(0, str(code))
    assert load_worker("user_workers:make_worker").id == "colony"


def test_the_repository_example_by_its_path() -> None:
    worker = load_worker(str(REPO / "examples" / "colony_worker.py") + ":make_worker")
    assert {"get_colony_id", "scale", "announce"} <= {m.name for m in worker.methods.infos()}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "expects MODULE:FACTORY"),
        ("no_such_module_anywhere:make", "no module named 'no_such_module_anywhere'"),
        ("{dir}/absent.py:make", "no such file"),
        ("{dir}/user_workers.py:absent", "has no attribute 'absent' (it has: Colony, make_worker"),
        ("{dir}/user_workers.py:not_a_worker", "is a int, not a fedproto.Worker"),
        ("{dir}/user_workers.py:make_nothing", "make_nothing() returned int, not a fedproto.Worker"),
        ("{dir}/user_workers.py:make_broken", "make_broken() failed: RuntimeError: no colony today"),
        ("{dir}/raises_on_import.py:make", "importing raises_on_import.py failed: RuntimeError: bad module"),
        ("{dir}/missing_dependency.py:make", "No module named 'no_such_dependency_anywhere'"),
        ("{dir}/sibling_helpers.txt:make", "is not a .py file"),
    ],
    ids=[
        "no-colon",
        "no-module",
        "no-file",
        "no-attribute",
        "not-callable",
        "wrong-type",
        "factory-fails",
        "module-fails",
        "dependency-missing",
        "not-python",
    ],
)
def test_load_errors_are_one_typed_line(code: Path, spec: str, message: str) -> None:
    with pytest.raises(WorkerLoadError) as info:
        load_worker(spec.format(dir=code))
    text = str(info.value)
    assert message in text and "\n" not in text
    assert isinstance(info.value, ValueError)  # a usage error: the command line prints it as one line


def test_methods_picks_up_exactly_the_marked_functions_defined_in_the_module(code: Path) -> None:
    worker = fedproto.Worker("plain")
    names = load_methods(str(code / "user_methods.py"), worker)
    assert names == ["first", "second_name"]
    infos = {m.name: m for m in worker.methods.infos()}
    assert set(infos) == {"first", "second_name"}  # not unmarked, not Holder.inside, not the import
    assert infos["second_name"].description == "the second"


def test_methods_errors(code: Path) -> None:
    worker = fedproto.Worker("plain")
    with pytest.raises(WorkerLoadError, match=r"--methods json: no function in it is marked @fedproto.rpc"):
        load_methods("json", worker)
    load_methods(str(code / "user_methods.py"), worker)
    with pytest.raises(WorkerLoadError, match="'first' is already registered"):
        load_methods(str(code / "user_methods.py"), worker)


def test_a_file_is_imported_once(code: Path) -> None:
    first = import_user_module(str(code / "user_methods.py"), option="--methods")
    assert import_user_module(str(code / "user_methods.py"), option="--methods") is first
