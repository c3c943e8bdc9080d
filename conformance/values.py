"""Building and comparing ``Value`` and ``Tensor`` messages (sections 7 and 8)."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any, cast

from fedproto_pb.v1 import tensor_pb2, value_pb2

from .spec import DTYPE_WIDTHS

__all__ = [
    "element_count",
    "make_tensor",
    "tensor_problem",
    "to_value",
    "value_depth",
    "value_diff",
    "value_list",
    "value_map",
]


def element_count(shape: Sequence[int]) -> int:
    """product(shape), with product([]) = 1 (section 7.2.4)."""
    count = 1
    for size in shape:
        count *= size
    return count


def make_tensor(dtype: int, shape: Sequence[int], data: bytes) -> tensor_pb2.Tensor:
    """A Tensor message (no validation: invalid ones are built on purpose too)."""
    return tensor_pb2.Tensor(dtype=cast(Any, dtype), shape=list(shape), data=data)


def tensor_problem(tensor: tensor_pb2.Tensor) -> str | None:
    """Why ``tensor`` breaks section 7.2, or None when it is valid."""
    width = DTYPE_WIDTHS.get(tensor.dtype)
    if width is None:
        return f"dtype {tensor.dtype} is not a valid DType (section 7.2.7)"
    if any(size < 0 for size in tensor.shape):
        return f"shape {list(tensor.shape)} has a negative entry (section 7.2.3)"
    expected = element_count(tensor.shape) * width
    if len(tensor.data) != expected:
        return f"data has {len(tensor.data)} bytes, shape and dtype need {expected} (section 7.2.6)"
    if tensor.dtype == tensor_pb2.DTYPE_BOOL and any(b > 1 for b in tensor.data):
        return "a bool tensor holds a byte other than 0 or 1 (section 7.2.7)"
    return None


def to_value(obj: Any) -> value_pb2.Value:
    """A Value from a Python object: None, bool, int, float, str, bytes, Tensor, list, tuple or dict."""
    if isinstance(obj, value_pb2.Value):
        return obj
    if obj is None:
        return value_pb2.Value(null_value=value_pb2.NULL_VALUE)
    if isinstance(obj, bool):
        return value_pb2.Value(bool_value=obj)
    if isinstance(obj, int):
        return value_pb2.Value(int_value=obj)
    if isinstance(obj, float):
        return value_pb2.Value(double_value=obj)
    if isinstance(obj, str):
        return value_pb2.Value(string_value=obj)
    if isinstance(obj, bytes):
        return value_pb2.Value(bytes_value=obj)
    if isinstance(obj, tensor_pb2.Tensor):
        return value_pb2.Value(tensor_value=obj)
    if isinstance(obj, (list, tuple)):
        return value_list(to_value(v) for v in obj)
    if isinstance(obj, dict):
        return value_map((str(k), to_value(v)) for k, v in obj.items())
    raise TypeError(f"cannot make a Value of {type(obj).__name__}")


def value_list(items: Iterable[value_pb2.Value]) -> value_pb2.Value:
    """A list Value."""
    value = value_pb2.Value()
    value.list_value.SetInParent()
    value.list_value.items.extend(items)
    return value


def value_map(entries: Iterable[tuple[str, value_pb2.Value]]) -> value_pb2.Value:
    """A map Value, entries in the given order (duplicates kept, for invalid maps)."""
    value = value_pb2.Value()
    value.map_value.SetInParent()
    for key, item in entries:
        value.map_value.entries.add(key=key).value.CopyFrom(item)
    return value


def value_depth(value: value_pb2.Value) -> int:
    """The depth of section 8.3.1."""
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return 1 + max((value_depth(v) for v in value.list_value.items), default=0)
    if kind == "map_value":
        return 1 + max((value_depth(e.value) for e in value.map_value.entries), default=0)
    return 1


def _double_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def value_diff(expected: value_pb2.Value, got: value_pb2.Value, path: str = "value") -> str | None:
    """Where ``got`` differs from ``expected`` (kinds, order, bits), or None when they are the same.

    Doubles compare by bits (so -0.0 differs from 0.0), except that any NaN equals any NaN; tensors
    compare dtype, shape and data byte for byte.
    """
    kind, other = expected.WhichOneof("kind"), got.WhichOneof("kind")
    if kind != other:
        return f"{path} is {other or 'unset'}, expected {kind or 'unset'}"
    if kind == "double_value":
        da, db = expected.double_value, got.double_value
        if (math.isnan(da) and math.isnan(db)) or _double_bits(da) == _double_bits(db):
            return None
        return f"{path} is {db!r}, expected {da!r}"
    if kind == "tensor_value":
        ta, tb = expected.tensor_value, got.tensor_value
        if ta.dtype != tb.dtype or list(ta.shape) != list(tb.shape) or ta.data != tb.data:
            return f"{path} is a different tensor (dtype, shape or bytes changed)"
        return None
    if kind == "list_value":
        ia, ib = expected.list_value.items, got.list_value.items
        if len(ia) != len(ib):
            return f"{path} has {len(ib)} items, expected {len(ia)}"
        for i, (x, y) in enumerate(zip(ia, ib, strict=True)):
            diff = value_diff(x, y, f"{path}[{i}]")
            if diff:
                return diff
        return None
    if kind == "map_value":
        ea, eb = expected.map_value.entries, got.map_value.entries
        keys_a, keys_b = [e.key for e in ea], [e.key for e in eb]
        if keys_a != keys_b:
            return f"{path} has keys {keys_b!r}, expected {keys_a!r} (in this order)"
        for ex, ey in zip(ea, eb, strict=True):
            diff = value_diff(ex.value, ey.value, f"{path}[{ex.key!r}]")
            if diff:
                return diff
        return None
    field = kind or "null_value"
    a, b = getattr(expected, field), getattr(got, field)
    if a != b:
        return f"{path} is {b!r}, expected {a!r}"
    return None
