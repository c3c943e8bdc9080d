"""Section 10 and 18.1: listing datasets and the conformance fixture."""

from __future__ import annotations

from typing import Any

from fedproto_pb.v1 import datasets_pb2, tensor_pb2

from ..checks import check, fail
from ..context import Context
from ..registry import case
from ..spec import DTYPE_WIDTHS

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

DS = ("datasets",)


async def _datasets(ctx: Context) -> list[datasets_pb2.DatasetInfo]:
    conn = await ctx.connect()
    reply = await conn.expect("list_datasets", datasets_pb2.ListDatasetsRequest())
    return list(reply.datasets)


def _fixture(datasets: list[datasets_pb2.DatasetInfo]) -> datasets_pb2.DatasetInfo:
    found = [d for d in datasets if d.key == "conformance"]
    if not found:
        fail(f"list_datasets has no dataset 'conformance' (keys: {[d.key for d in datasets]})")
    return found[0]


@case(
    "datasets/18.1.1/fixture-offered",
    rule="The server MUST offer a dataset with key conformance and description conformance fixture.",
    needs=DS,
)
async def _case_fixture_offered(ctx: Context) -> None:
    fixture = _fixture(await _datasets(ctx))
    check(
        fixture.description == "conformance fixture",
        f"the fixture's description is {fixture.description!r}, expected 'conformance fixture'",
    )


@case(
    "datasets/18.1.2/fixture-shape",
    rule="It has 64 samples; feature_shape [4] with feature_dtype DTYPE_FLOAT32; target_shape [] (scalar) "
    "with target_dtype DTYPE_INT64.",
    needs=DS,
)
async def _case_fixture_shape(ctx: Context) -> None:
    d = _fixture(await _datasets(ctx))
    got = (d.sample_count, list(d.feature_shape), d.feature_dtype, list(d.target_shape), d.target_dtype)
    expected: tuple[Any, ...] = (64, [4], tensor_pb2.DTYPE_FLOAT32, [], tensor_pb2.DTYPE_INT64)
    check(
        got == expected,
        f"the fixture is (samples, feature_shape, feature_dtype, target_shape, target_dtype) = {got}, "
        f"expected {expected}",
    )


@case(
    "datasets/10.1.2/sorted-by-key",
    rule="The datasets MUST be sorted by key (byte-wise comparison of the UTF-8 keys).",
    needs=DS,
)
async def _case_sorted(ctx: Context) -> None:
    keys = [d.key for d in await _datasets(ctx)]
    check(keys == sorted(keys, key=lambda k: k.encode()), f"list_datasets gives keys in the order {keys}")


@case(
    "datasets/10.1.3/dataset-info-valid",
    rule="DatasetInfo fields: key, sample_count, feature_shape, target_shape, feature_dtype, target_dtype, "
    "description (shapes without the sample dimension, valid element types; §7.2.9).",
    needs=DS,
)
async def _case_info_valid(ctx: Context) -> None:
    for d in await _datasets(ctx):
        check(d.key, "a dataset has an empty key")
        check(d.feature_dtype in DTYPE_WIDTHS, f"dataset {d.key!r} has feature_dtype {d.feature_dtype}")
        check(d.target_dtype in DTYPE_WIDTHS, f"dataset {d.key!r} has target_dtype {d.target_dtype}")
        check(
            all(s >= 0 for s in [*d.feature_shape, *d.target_shape]),
            f"dataset {d.key!r} has a negative shape entry",
        )
