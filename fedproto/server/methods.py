"""Custom methods a data owner exposes by name, and nothing else (docs/protocol.md section 11).

A function becomes callable over the wire only through explicit registration: ``@worker.method`` on a
function, or ``@rpc`` on a method of a :class:`~fedproto.Worker` subclass. Parameter types come from the
signature's annotations and are checked against the arguments' Value kinds before the function runs.
A parameter annotated :class:`CallContext` is filled in by the worker (the caller's identity, a way to
push notifications to the caller, a cancellation flag) and is not part of the wire signature.
"""

from __future__ import annotations

import inspect
import threading
import types
import typing
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import numpy as np
import torch

from fedproto.errors import InvalidArgumentError, MethodNotFoundError
from fedproto.types import MethodInfo, ParameterInfo

__all__ = ["CallContext", "ExposedMethod", "MethodRegistry", "rpc"]

F = TypeVar("F", bound=Callable[..., Any])

_RPC_MARK = "__fedproto_rpc__"
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

#: Python annotations and the Value kind (calls.proto ParameterInfo.type) each accepts.
_KIND_OF_TYPE: dict[Any, str] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "double",
    str: "string",
    bytes: "bytes",
    torch.Tensor: "tensor",
    np.ndarray: "tensor",
    list: "list",
    tuple: "list",
    dict: "map",
}


def _kind_of_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return "any"


@dataclass
class CallContext:
    """What a handler may learn about its call: add a parameter annotated ``CallContext`` to get it."""

    #: The caller's identity ("anonymous" when the worker requires no token).
    identity: str
    #: The method being called.
    method: str
    #: Set when the call is cancelled or its deadline passes; sync handlers may poll it.
    cancelled: threading.Event = field(default_factory=threading.Event)
    _notify: Callable[[str, Any], Coroutine[Any, Any, None]] | None = None
    _loop: Any = None

    async def notify(self, topic: str, payload: Any = None) -> None:
        """Push a notification to the calling connection (from an async handler)."""
        if self._notify is not None:
            await self._notify(topic, payload)

    def notify_threadsafe(self, topic: str, payload: Any = None) -> None:
        """Push a notification from a sync handler (which runs off the event loop) and wait for it."""
        import asyncio

        if self._notify is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._notify(topic, payload), self._loop).result()


@dataclass(frozen=True)
class _Param:
    name: str
    kinds: frozenset[str]  # accepted Value kinds; empty means any
    kind: inspect._ParameterKind
    required: bool
    wire_type: str = field(init=False)  # computed once: bind reads it on every call

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire_type", _wire_type(self.kinds))


def _wire_type(kinds: frozenset[str]) -> str:
    """The one type string (calls.proto ParameterInfo.type) describing accepted kinds."""
    if kinds == {"null"}:
        return "null"
    named = kinds - {"null"}
    if named == {"double", "int"}:  # a double parameter also takes ints (section 11.2.5)
        return "double"
    return next(iter(named)) if len(named) == 1 else "any"


def _accepted_kinds(annotation: Any) -> frozenset[str]:
    """The Value kinds an annotation accepts (empty: anything)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return frozenset()
    if annotation is None:
        return frozenset({"null"})
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds: set[str] = set()
        for arg in typing.get_args(annotation):
            sub = _accepted_kinds(arg)
            if not sub:
                return frozenset()
            kinds |= sub
        return frozenset(kinds)
    base = origin if origin is not None else annotation
    for python_type, kind in _KIND_OF_TYPE.items():
        if isinstance(base, type) and issubclass(base, python_type):
            # float parameters also take ints: 1 is a fine learning rate.
            return frozenset({"double", "int"}) if kind == "double" else frozenset({kind})
    if isinstance(base, type) and issubclass(base, (Sequence,)) and base is not str:
        return frozenset({"list"})
    if isinstance(base, type) and issubclass(base, Mapping):
        return frozenset({"map"})
    return frozenset()


class ExposedMethod:
    """One registered method: its callable, its wire description, and argument checking."""

    def __init__(
        self, func: Callable[..., Any], *, name: str, description: str, inline: bool = False
    ) -> None:
        self.func = func
        self.name = name
        self.description = description
        self.is_async = inspect.iscoroutinefunction(func)
        #: run a plain function on the event loop instead of a thread (it must never block)
        self.inline = inline and not self.is_async
        signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:
            hints = {}
        self._context_param: str | None = None
        params: list[_Param] = []
        for p in signature.parameters.values():
            annotation = hints.get(p.name, p.annotation)
            if annotation is CallContext or annotation == "CallContext":
                self._context_param = p.name
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL or p.kind is inspect.Parameter.VAR_KEYWORD:
                required = False
            else:
                required = p.default is inspect.Parameter.empty
            kinds = _accepted_kinds(annotation)
            if kinds and not required and p.default is None:
                kinds = kinds | {"null"}
            params.append(_Param(p.name, kinds, p.kind, required))
        self._params = params
        self._names = [p.name for p in params]
        self._simple = all(
            p.required
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in params
        )
        self._full_signature = signature
        self._signature = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name != self._context_param]
        )
        returns = hints.get("return", signature.return_annotation)
        self.returns = _wire_type(_accepted_kinds(returns))

    def info(self) -> MethodInfo:
        """Describe the method for ListMethods."""
        kind_names = {
            inspect.Parameter.POSITIONAL_ONLY: "positional",
            inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
            inspect.Parameter.VAR_POSITIONAL: "var_positional",
            inspect.Parameter.KEYWORD_ONLY: "keyword",
            inspect.Parameter.VAR_KEYWORD: "var_keyword",
        }
        return MethodInfo(
            name=self.name,
            description=self.description,
            returns=self.returns,
            parameters=tuple(
                ParameterInfo(name=p.name, type=p.wire_type, required=p.required, kind=kind_names[p.kind])
                for p in self._params
            ),
        )

    @property
    def wants_context(self) -> bool:
        """Whether the method declares a :class:`CallContext` parameter."""
        return self._context_param is not None

    def bind(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], context: CallContext | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Check the arguments against the signature (INVALID_ARGUMENT) and add the context."""
        if self._simple and not kwargs and len(args) == len(self._params):
            # every parameter positional and required, all given by position: nothing to resolve
            bound = inspect.BoundArguments(self._signature, dict(zip(self._names, args, strict=True)))
        else:
            try:
                bound = self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise InvalidArgumentError(f"{self.name}(): {exc}") from None
        for param in self._params:
            if param.name not in bound.arguments or not param.kinds:
                continue
            value = bound.arguments[param.name]
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                values: Sequence[Any] = value
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                values = list(value.values())
            else:
                values = [value]
            for item in values:
                got = _kind_of_value(item)
                if got not in param.kinds:
                    expected = " or ".join(sorted(param.kinds))
                    raise InvalidArgumentError(
                        f"{self.name}(): argument {param.name!r} must be {expected}, got {got}",
                        details={"parameter": param.name},
                    )
            if param.wire_type == "double" and param.kind not in _VARIADIC:
                # an int given for a double parameter arrives as the nearest double (section 11.2.5)
                if _kind_of_value(value) == "int":
                    bound.arguments[param.name] = float(value)
            elif param.wire_type == "double" and param.kind is inspect.Parameter.VAR_POSITIONAL:
                bound.arguments[param.name] = tuple(
                    float(v) if _kind_of_value(v) == "int" else v for v in value
                )
            elif param.wire_type == "double":
                bound.arguments[param.name] = {
                    k: float(v) if _kind_of_value(v) == "int" else v for k, v in value.items()
                }
        if self._context_param is None:
            return tuple(bound.args), dict(bound.kwargs)
        # Rebind on the full signature so the context lands in its own slot, wherever it is declared.
        arguments = {
            name: context if name == self._context_param else bound.arguments[name]
            for name in self._full_signature.parameters
            if name == self._context_param or name in bound.arguments
        }
        full = inspect.BoundArguments(self._full_signature, arguments)
        return tuple(full.args), dict(full.kwargs)


@overload
def rpc(func: F, /) -> F: ...


@overload
def rpc(
    *, name: str | None = None, description: str | None = None, inline: bool = False
) -> Callable[[F], F]: ...


def rpc(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    inline: bool = False,
) -> F | Callable[[F], F]:
    """Mark a method of a Worker subclass as callable by clients (``@rpc`` or ``@rpc(name=...)``).

    A module-level function marked ``@rpc`` is exposed by ``fedproto serve --methods MODULE`` (see
    :meth:`MethodRegistry.register_module`).

    ``inline=True`` runs a plain (non-async) method on the event loop instead of a thread: only for
    methods that return at once and never block, where the thread hop would cost more than the work.
    """

    def mark(f: F) -> F:
        setattr(f, _RPC_MARK, (name or f.__name__, description, inline))
        return f

    return mark(func) if func is not None else mark


def _first_doc_line(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class MethodRegistry:
    """The methods one worker exposes, by name."""

    def __init__(self) -> None:
        self._methods: dict[str, ExposedMethod] = {}

    def register(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        inline: bool = False,
    ) -> ExposedMethod:
        """Expose ``func`` under ``name`` (default: its ``__name__``); returns the registration.

        Plain functions run on a thread, off the event loop, unless ``inline`` (see :func:`rpc`).
        """
        method_name = name or getattr(func, "__name__", "")
        if not method_name or not isinstance(method_name, str):
            raise ValueError("a method needs a non-empty name")
        if method_name in self._methods:
            raise ValueError(f"method {method_name!r} is already registered")
        exposed = ExposedMethod(
            func, name=method_name, description=description or _first_doc_line(func), inline=inline
        )
        self._methods[method_name] = exposed
        return exposed

    def register_marked(self, owner: object) -> None:
        """Register every ``@rpc``-marked method of ``owner`` (bound to it)."""
        for attr in dir(type(owner)):
            member = getattr(type(owner), attr, None)
            mark = getattr(member, _RPC_MARK, None)
            if mark is not None:
                rpc_name, description, inline = mark
                self.register(getattr(owner, attr), name=rpc_name, description=description, inline=inline)

    def register_module(self, module: types.ModuleType) -> list[str]:
        """Register the ``@rpc``-marked functions of ``module``; returns their names, in definition order.

        Exactly these are picked up: module-level functions (plain or ``async def``) defined in
        ``module`` itself (a function it imported from elsewhere is not exposed again) that carry the
        ``@rpc`` mark. Unmarked functions, classes and their methods are left alone.
        """
        names = []
        for value in list(vars(module).values()):
            if not inspect.isfunction(value) or value.__module__ != module.__name__:
                continue
            mark = getattr(value, _RPC_MARK, None)
            if mark is not None:
                rpc_name, description, inline = mark
                self.register(value, name=rpc_name, description=description, inline=inline)
                names.append(rpc_name)
        return names

    def get(self, name: str) -> ExposedMethod:
        """Return the method called ``name`` (METHOD_NOT_FOUND otherwise)."""
        try:
            return self._methods[name]
        except KeyError:
            raise MethodNotFoundError(f"no method named {name!r} is exposed") from None

    def infos(self) -> list[MethodInfo]:
        """Describe every method, sorted by name."""
        return [self._methods[n].info() for n in sorted(self._methods)]

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)
