"""The suite's strategies and helpers do what they claim, checked without any server."""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.cases._common import chunk_sizes, ping_of_size
from conformance.strategies import garbage, invalid_tensors, parses, tensors, values, varint
from conformance.values import make_tensor, tensor_problem, to_value, value_depth, value_diff


@given(tensors())
def test_generated_tensors_are_valid(tensor) -> None:
    assert tensor_problem(tensor) is None


@given(invalid_tensors())
def test_invalid_tensors_are_invalid(bad) -> None:
    tensor, why = bad
    if "overflows" in why:
        assert tensor_problem(tensor) is not None or math.prod(tensor.shape) % (1 << 64) == 0
    else:
        assert tensor_problem(tensor) is not None, why


@settings(max_examples=200)
@given(garbage())
def test_garbage_never_parses(data: bytes) -> None:
    assert not parses(data)


@given(st.integers(20, 70000))
def test_ping_of_size_is_exact(size: int) -> None:
    assert len(ping_of_size(7, size)) == size


@given(st.integers(0, 10_000), st.integers(1, 999))
def test_chunk_sizes_cover_the_payload(total: int, chunk: int) -> None:
    sizes = chunk_sizes(total, chunk)
    assert sum(sizes) == total
    assert all(s == chunk for s in sizes[:-1])
    assert all(0 < s <= chunk for s in sizes)


@given(values())
def test_values_equal_themselves(value) -> None:
    copy = type(value)()
    copy.ParseFromString(value.SerializeToString())
    assert value_diff(value, copy) is None
    assert value_depth(value) >= 1


def test_value_diff_compares_bits_and_kinds() -> None:
    nan1 = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert value_diff(to_value(float("nan")), to_value(nan1)) is None
    assert value_diff(to_value(0.0), to_value(-0.0)) is not None
    assert value_diff(to_value(1), to_value(1.0)) is not None
    assert value_diff(to_value({"a": 1, "b": 2}), to_value({"b": 2, "a": 1})) is not None
    assert value_diff(to_value([1, [2]]), to_value([1, [2]])) is None


def test_varint_matches_protobuf() -> None:
    assert varint(0) == b"\x00"
    assert varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"
    assert tensor_problem(make_tensor(2, [2], bytes(8))) is None
