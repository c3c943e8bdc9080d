"""The method registry on its own: types from annotations, binding, CallContext, registration rules."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import pytest
import torch

import fedproto
from fedproto.errors import InvalidArgumentError, MethodNotFoundError
from fedproto.server.methods import CallContext, ExposedMethod, MethodRegistry, rpc

# Annotations in this module are strings (postponed evaluation), as in most user code.


def exposed(func: Any, name: str | None = None) -> ExposedMethod:
    return ExposedMethod(func, name=name or func.__name__, description="")


def context(identity: str = "alice") -> CallContext:
    return CallContext(identity=identity, method="m")


def call(method: ExposedMethod, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Any:
    bound_args, bound_kwargs = method.bind(list(args), dict(kwargs or {}), context())
    return method.func(*bound_args, **bound_kwargs)


# -- type inference -------------------------------------------------------------------------------------


def _p_int(x: int) -> None: ...
def _p_str(x: str) -> None: ...
def _p_bool(x: bool) -> None: ...
def _p_bytes(x: bytes) -> None: ...
def _p_tensor(x: torch.Tensor) -> None: ...
def _p_ndarray(x: np.ndarray) -> None: ...
def _p_list(x: list) -> None: ...  # type: ignore[type-arg]
def _p_list_int(x: list[int]) -> None: ...
def _p_tuple(x: tuple[int, ...]) -> None: ...
def _p_sequence(x: Sequence[int]) -> None: ...
def _p_dict(x: dict[str, int]) -> None: ...
def _p_mapping(x: Mapping[str, Any]) -> None: ...
def _p_any(x: Any) -> None: ...
def _p_none(x: None) -> None: ...
def _p_bare(x) -> None: ...  # type: ignore[no-untyped-def]
def _p_optional(x: Optional[int]) -> None: ...  # noqa: UP045
def _p_union_none(x: int | None) -> None: ...
def _p_union(x: int | str) -> None: ...
def _p_union_any(x: int | Any) -> None: ...


@pytest.mark.parametrize(
    ("func", "wire_type"),
    [
        (_p_int, "int"),
        (_p_str, "string"),
        (_p_bool, "bool"),
        (_p_bytes, "bytes"),
        (_p_tensor, "tensor"),
        (_p_ndarray, "tensor"),
        (_p_list, "list"),
        (_p_list_int, "list"),
        (_p_tuple, "list"),
        (_p_sequence, "list"),
        (_p_dict, "map"),
        (_p_mapping, "map"),
        (_p_any, "any"),
        (_p_bare, "any"),
        (_p_optional, "int"),
        (_p_union_none, "int"),
        (_p_union, "any"),
        (_p_union_any, "any"),
    ],
    ids=lambda v: v.__name__.removeprefix("_p_") if callable(v) else v,
)
def test_parameter_type_from_annotation(func: Any, wire_type: str) -> None:
    (param,) = exposed(func).info().parameters
    assert param.type == wire_type


def test_none_parameter_is_null() -> None:
    (param,) = exposed(_p_none).info().parameters
    assert param.type == "null"
    with pytest.raises(InvalidArgumentError):
        exposed(_p_none).bind([1], {}, context())


def test_float_parameter_and_result_are_double() -> None:
    def scale(x: float) -> float:
        return x

    info = exposed(scale).info()
    assert info.parameters[0].type == "double"
    assert info.returns == "double"


@pytest.mark.parametrize(
    ("annotation", "returns"),
    [("int", "int"), ("None", "null"), ("str", "string"), ("dict[str, Any]", "map"), ("Any", "any")],
)
def test_return_type_from_annotation(annotation: str, returns: str) -> None:
    namespace: dict[str, Any] = {"Any": Any}
    exec(f"def f() -> {annotation}: ...", namespace)
    assert exposed(namespace["f"]).info().returns == returns


def test_unannotated_return_is_any() -> None:
    def f():  # type: ignore[no-untyped-def]
        return 1

    assert exposed(f).info().returns == "any"


def test_parameter_kinds_and_required() -> None:
    def f(a: int, /, b: str, c: float = 1.0, *rest: int, d: bool, e: bytes = b"", **more: str) -> None: ...

    params = exposed(f).info().parameters
    assert [(p.name, p.kind, p.required) for p in params] == [
        ("a", "positional", True),
        ("b", "positional_or_keyword", True),
        ("c", "positional_or_keyword", False),
        ("rest", "var_positional", False),
        ("d", "keyword", True),
        ("e", "keyword", False),
        ("more", "var_keyword", False),
    ]
    assert params[3].type == "int" and params[6].type == "string"


# -- binding --------------------------------------------------------------------------------------------


def test_kinds_are_checked_without_conversion() -> None:
    def f(n: int, s: str, flag: bool, data: bytes, items: list[Any], table: dict[str, Any]) -> None: ...

    method = exposed(f)
    good = [1, "s", True, b"b", [1], {"k": 1}]
    method.bind(good, {}, context())
    for index, bad in enumerate([True, b"s", 1, "b", {"k": 1}, [1]]):
        args = list(good)
        args[index] = bad
        with pytest.raises(InvalidArgumentError) as info:
            method.bind(args, {}, context())
        assert info.value.details["parameter"] == list(inspect.signature(f).parameters)[index]
    with pytest.raises(InvalidArgumentError):
        method.bind([1.0, *good[1:]], {}, context())  # a double is not an int


def test_a_double_parameter_accepts_an_int() -> None:
    def half(x: float) -> float:
        return x / 2

    assert call(exposed(half), [3]) == 1.5
    assert call(exposed(half), [3.0]) == 1.5
    with pytest.raises(InvalidArgumentError):
        exposed(half).bind(["3"], {}, context())


def test_an_int_for_a_double_parameter_arrives_as_a_float() -> None:
    def kind(x: float) -> str:
        return type(x).__name__

    assert call(exposed(kind), [3]) == "float"


def test_optional_parameters_accept_none() -> None:
    def f(a: int | None, b: Optional[str] = "x", c: int = None, d: int = 5) -> tuple[Any, ...]:  # type: ignore[assignment]  # noqa: UP045, RUF013
        return a, b, c, d

    method = exposed(f)
    assert call(method, [None]) == (None, "x", None, 5)
    assert call(method, [1], {"b": None, "c": None}) == (1, None, None, 5)
    assert call(method, [1, "y", 2, 3]) == (1, "y", 2, 3)
    with pytest.raises(InvalidArgumentError):
        method.bind([1], {"d": None}, context())  # a non-None default does not make None acceptable
    with pytest.raises(InvalidArgumentError):
        method.bind([], {}, context())  # Optional is not the same as having a default


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([], {}),  # missing required
        ([1, 2, 3], {}),  # too many positional
        ([1], {"nope": 1}),  # unknown keyword
        ([1], {"a": 1}),  # by position and by keyword
    ],
    ids=["missing", "too-many", "unknown-keyword", "twice"],
)
def test_arity_errors(args: list[Any], kwargs: dict[str, Any]) -> None:
    def f(a: int, b: int = 2) -> None: ...

    with pytest.raises(InvalidArgumentError):
        exposed(f).bind(args, kwargs, context())


def test_positional_only_by_keyword_is_refused() -> None:
    def f(a: int, /) -> None: ...

    with pytest.raises(InvalidArgumentError):
        exposed(f).bind([], {"a": 1}, context())


def test_variadic_parameters_check_each_value() -> None:
    def f(*numbers: int, **names: str) -> tuple[Any, Any]:
        return numbers, names

    method = exposed(f)
    assert call(method, [1, 2], {"x": "a"}) == ((1, 2), {"x": "a"})
    with pytest.raises(InvalidArgumentError):
        method.bind([1, "2"], {}, context())
    with pytest.raises(InvalidArgumentError):
        method.bind([], {"x": 1}, context())


# -- CallContext ----------------------------------------------------------------------------------------


def _ctx_first(ctx: CallContext, a: int, b: int = 2) -> tuple[str, int, int]:
    return ctx.identity, a, b


def _ctx_middle(a: int, ctx: CallContext, b: int = 2) -> tuple[str, int, int]:
    return ctx.identity, a, b


def _ctx_last(a: int, b: int = 2, *, ctx: CallContext) -> tuple[str, int, int]:
    return ctx.identity, a, b


def _ctx_positional_only(ctx: CallContext, /, a: int, b: int = 2) -> tuple[str, int, int]:
    return ctx.identity, a, b


@pytest.mark.parametrize(
    "func", [_ctx_first, _ctx_middle, _ctx_last, _ctx_positional_only], ids=lambda f: f.__name__
)
def test_call_context_is_injected_wherever_it_is_declared(func: Any) -> None:
    method = exposed(func)
    assert [p.name for p in method.info().parameters] == ["a", "b"]
    assert call(method, [1]) == ("alice", 1, 2)
    assert call(method, [1], {"b": 3}) == ("alice", 1, 3)
    assert call(method, [], {"a": 4, "b": 5}) == ("alice", 4, 5)
    with pytest.raises(InvalidArgumentError):  # the context is no wire parameter
        method.bind([1], {"ctx": "forged"}, context())


async def test_call_context_notify_without_a_connection_is_a_no_op() -> None:
    ctx = context()
    await ctx.notify("topic", 1)
    ctx.notify_threadsafe("topic", 1)
    assert not ctx.cancelled.is_set()


# -- registration ---------------------------------------------------------------------------------------


def test_registry_lists_sorted_and_finds_by_name() -> None:
    registry = MethodRegistry()

    def zeta() -> None:
        """Last one.

        More text."""

    async def alpha(x: int) -> int:
        return x

    registry.register(zeta)
    registry.register(alpha, description="First one.")
    assert [i.name for i in registry.infos()] == ["alpha", "zeta"]
    assert registry.get("zeta").description == "Last one."
    assert registry.get("alpha").description == "First one."
    assert registry.get("alpha").is_async and not registry.get("zeta").is_async
    assert "alpha" in registry and "beta" not in registry and len(registry) == 2
    with pytest.raises(MethodNotFoundError):
        registry.get("beta")


def test_duplicate_registration_raises() -> None:
    worker = fedproto.Worker("w")

    @worker.method
    def once() -> int:
        return 1

    with pytest.raises(ValueError):
        worker.method(once)
    with pytest.raises(ValueError):
        worker.method(name="once")(lambda: 2)
    assert worker.methods.get("once").func is once


def test_worker_method_decorator_with_name_and_description() -> None:
    worker = fedproto.Worker("w")

    @worker.method(name="colony", description="The colony id.")
    def get_colony_id() -> int:
        """Ignored docstring."""
        return 7

    assert get_colony_id() == 7  # the decorator returns the function itself
    assert "colony" in worker.methods and "get_colony_id" not in worker.methods
    info = worker.methods.get("colony").info()
    assert info.description == "The colony id."
    assert info.returns == "int"


class ColonyWorker(fedproto.Worker):
    def __init__(self, colony: int) -> None:
        super().__init__("colony")
        self.colony = colony

    @rpc
    def get_colony_id(self) -> int:
        """Which colony this worker belongs to."""
        return self.colony

    @rpc(name="rename", description="Renamed.")
    def original_name(self, ctx: CallContext, suffix: str = "") -> str:
        return ctx.identity + suffix

    def helper(self) -> int:
        return 0


def test_rpc_on_a_worker_subclass() -> None:
    one, two = ColonyWorker(1), ColonyWorker(2)
    assert sorted(i.name for i in one.methods.infos()) == ["get_colony_id", "rename"]
    assert one.methods.get("get_colony_id").func() == 1  # bound to its own instance
    assert two.methods.get("get_colony_id").func() == 2
    info = one.methods.get("get_colony_id").info()
    assert info.description == "Which colony this worker belongs to."
    assert info.parameters == ()  # no self
    rename = one.methods.get("rename")
    assert rename.description == "Renamed."
    assert [p.name for p in rename.info().parameters] == ["suffix"]
    assert call(rename, ["!"]) == "alice!"


def test_rpc_name_clashing_with_worker_method_raises() -> None:
    worker = ColonyWorker(3)
    with pytest.raises(ValueError):
        worker.method(name="get_colony_id")(lambda: 0)


def test_nothing_unregistered_is_callable() -> None:
    plain = fedproto.Worker("w")
    assert len(plain.methods) == 0
    colony = ColonyWorker(1)
    for name in (
        "add_dataset",
        "__init__",
        "helper",
        "original_name",
        "run",
        "stop",
        "serve",
        "notify",
        "methods",
        "colony",
        "__class__",
        "get_colony_id.__globals__",
        "",
    ):
        for worker in (plain, colony):
            with pytest.raises(MethodNotFoundError):
                worker.methods.get(name)
    for name in dir(fedproto.Worker):
        assert name not in plain.methods
