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


def test_package_exports_are_the_public_classes() -> None:
    public = set(fedproto.__all__)
    for needed in ("Worker", "Client", "AsyncClient", "TrainConfig", "rpc", "ProtocolError", "ErrorCode"):
        assert needed in public
    # every exception class of the errors module is reachable from the package
    from fedproto import errors

    for symbol in errors.__all__:
        if symbol.endswith("Error") or symbol == "ErrorCode":
            assert symbol in public, symbol
