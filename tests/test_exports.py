"""The declared public API: every module has ``__all__``, and the package re-exports what it promises."""

from __future__ import annotations

import importlib
import pkgutil

import fedproto


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(fedproto.__path__, "fedproto."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_every_module_declares_all() -> None:
    missing = [n for n in _modules() if not hasattr(importlib.import_module(n), "__all__")]
    assert not missing, f"modules without __all__: {missing}"


def test_all_names_exist() -> None:
    for name in ["fedproto", *_modules()]:
        module = importlib.import_module(name)
        for symbol in module.__all__:
            assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol}"


#: The modules whose whole public API the package re-exports (its docstring promises it).
WHOLE = ("fedproto.client", "fedproto.errors", "fedproto.federated", "fedproto.types")
#: The names the package picks from the data owner's modules.
PICKED = {
    "fedproto.server": ("CallContext", "Worker", "rpc"),
    "fedproto.training": ("TrainConfig",),
    "fedproto.datasets": ("Dataset", "DatasetDescription"),
}


def test_package_exports_exactly_the_union_it_promises() -> None:
    promised = {"__version__"}
    for name in WHOLE:
        promised |= set(importlib.import_module(name).__all__)
    for symbols in PICKED.values():
        promised |= set(symbols)
    exported = set(fedproto.__all__)
    assert exported == promised, (
        f"exported but not promised: {sorted(exported - promised)}; "
        f"promised but not exported: {sorted(promised - exported)}"
    )
    assert len(fedproto.__all__) == len(exported), "a name is listed twice in fedproto.__all__"


def test_package_exports_are_the_modules_own_objects() -> None:
    for name in [*WHOLE, *PICKED]:
        module = importlib.import_module(name)
        for symbol in PICKED.get(name, module.__all__):
            assert getattr(fedproto, symbol) is getattr(module, symbol), f"fedproto.{symbol} is not {name}'s"


def test_the_docstring_names_the_promise() -> None:
    doc = fedproto.__doc__ or ""
    for name in [*WHOLE, *PICKED]:
        assert f":mod:`{name}`" in doc, name
