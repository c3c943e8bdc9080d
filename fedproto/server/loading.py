"""Load a data owner's worker or methods from Python code named on the command line.

``fedproto serve --worker MODULE:FACTORY`` and ``--methods MODULE`` name code the way ``uvicorn`` and
``gunicorn`` do: ``MODULE`` is an importable module name (``mypkg.workers``) or the path of a ``.py``
file (``examples/colony_worker.py``). A file is imported as ``python FILE`` would run it, with its own
directory first on ``sys.path`` so that it can import its neighbours.

What ``FACTORY`` may be (:func:`load_worker`):

- a :class:`~fedproto.Worker` instance, used as it is;
- a ``Worker`` subclass or any other callable, called with no arguments, which must return a ``Worker``.

What ``--methods`` picks up (:func:`load_methods`, :meth:`MethodRegistry.register_module`): the
module-level functions (plain or ``async def``) *defined in that module* and marked ``@fedproto.rpc``;
each is exposed under its ``@rpc`` name. Nothing else: not unmarked functions, not classes or their
methods, not functions the module imported from elsewhere.

Every failure raises :class:`~fedproto.errors.WorkerLoadError` with one line naming the option, what it
asked for and what went wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from fedproto.errors import WorkerLoadError
from fedproto.server.worker import Worker

__all__ = ["import_user_module", "load_methods", "load_worker"]


def _is_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def import_user_module(name: str, *, option: str) -> ModuleType:
    """Import ``name``, a module name or a ``.py`` file; ``option`` prefixes every error message."""
    if not name:
        raise WorkerLoadError(f"{option}: no module given")
    if _is_path(name):
        return _import_file(Path(name), option=option)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            hint = " (a file path must end in .py)" if "." not in name else ""
            raise WorkerLoadError(f"{option}: no module named {exc.name!r}{hint}") from None
        raise WorkerLoadError(f"{option}: importing {name} failed: {_summary(exc)}") from None
    except Exception as exc:  # the user's module raised while it was imported
        raise WorkerLoadError(f"{option}: importing {name} failed: {_summary(exc)}") from None


def _import_file(path: Path, *, option: str) -> ModuleType:
    if path.suffix != ".py":
        raise WorkerLoadError(f"{option}: {path} is not a .py file")
    if not path.is_file():
        raise WorkerLoadError(f"{option}: no such file {path}")
    path = path.resolve()
    # Named after the file, as `python FILE` imports it; a private name when that name is taken.
    module_name = path.stem if path.stem.isidentifier() else "_fedproto_user_module"
    existing = sys.modules.get(module_name)
    if existing is not None:
        if getattr(existing, "__file__", None) == str(path):
            return existing
        module_name = f"_fedproto_user_{module_name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise WorkerLoadError(f"{option}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise WorkerLoadError(f"{option}: importing {path.name} failed: {_summary(exc)}") from None
    return module


def load_worker(spec: str) -> Worker:
    """The worker ``--worker MODULE:FACTORY`` names (see the module docstring for what is accepted)."""
    option = f"--worker {spec}"
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute.isidentifier():
        raise WorkerLoadError(
            f"--worker expects MODULE:FACTORY (a module name or a .py file, then a name in it), got {spec!r}"
        )
    module = import_user_module(module_name, option=option)
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise WorkerLoadError(
            f"{option}: {module_name} has no attribute {attribute!r}{_candidates(module)}"
        ) from None
    if isinstance(target, Worker):
        return target
    if not callable(target):
        raise WorkerLoadError(
            f"{option}: {attribute} is a {type(target).__name__}, not a fedproto.Worker, a Worker subclass "
            "or a callable returning one"
        )
    try:
        worker = target()
    except Exception as exc:
        raise WorkerLoadError(f"{option}: {attribute}() failed: {_summary(exc)}") from None
    if not isinstance(worker, Worker):
        raise WorkerLoadError(
            f"{option}: {attribute}() returned {type(worker).__name__}, not a fedproto.Worker"
        )
    return worker


def load_methods(module_name: str, worker: Worker) -> list[str]:
    """Expose on ``worker`` the ``@rpc`` functions of ``module_name`` (``--methods``); their names.

    A module without any such function is an error: it is almost certainly the wrong module, or its
    functions lack the ``@fedproto.rpc`` mark.
    """
    option = f"--methods {module_name}"
    module = import_user_module(module_name, option=option)
    try:
        names = worker.methods.register_module(module)
    except ValueError as exc:
        raise WorkerLoadError(f"{option}: {exc}") from None
    if not names:
        raise WorkerLoadError(f"{option}: no function in it is marked @fedproto.rpc")
    return names


def _candidates(module: ModuleType) -> str:
    """' (it has: a, b)' naming the module's own callables, a hint for a mistyped name."""
    names = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (
            isinstance(value, Worker)
            or (callable(value) and getattr(value, "__module__", None) == module.__name__)
        )
    ]
    return f" (it has: {', '.join(names[:8])})" if names else ""


def _defined_in(value: object, module: ModuleType) -> bool:
    return getattr(value, "__module__", None) == module.__name__


def _summary(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
