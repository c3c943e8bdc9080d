"""Aggregators against the same statistics written in NumPy (and SciPy's trim_mean)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from fedproto import codec
from fedproto.federated.aggregation import (
    SLICE_ELEMENTS,
    BufferedMean,
    CoordinateMedian,
    Fold,
    StreamingMean,
    TrimmedMean,
    UpdateMismatchError,
)
from fedproto.types import WeightSlice


def _updates(count: int, seed: int = 0) -> tuple[dict[str, Tensor], list[tuple[dict[str, Tensor], int]]]:
    rng = np.random.default_rng(seed)
    reference = {
        "w": torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32)),
        "b": torch.from_numpy(rng.normal(size=4).astype(np.float32)),
        "steps": torch.tensor(0),
    }
    updates = []
    for k in range(count):
        weights = {
            "w": torch.from_numpy(rng.normal(scale=10, size=(3, 4)).astype(np.float32)),
            "b": torch.from_numpy(rng.normal(size=4).astype(np.float32)),
            "steps": torch.tensor(100 + k),
        }
        updates.append((weights, int(rng.integers(1, 1000))))
    return reference, updates


def _numpy_mean(updates: list[tuple[dict[str, Tensor], int]], name: str) -> np.ndarray:
    total = sum(n for _, n in updates)
    acc = np.zeros(updates[0][0][name].shape, dtype=np.float64)
    for weights, n in updates:
        acc += weights[name].numpy().astype(np.float64) * n
    return (acc / total).astype(np.float32)


@pytest.mark.parametrize("deltas", [False, True])
@pytest.mark.parametrize("kind", [StreamingMean, BufferedMean])
def test_weighted_mean_is_the_exact_mean_rounded_once(kind: type[StreamingMean], deltas: bool) -> None:
    reference, updates = _updates(25)
    aggregator = kind(reference, deltas=deltas)
    for weights, n in updates:
        aggregator.add(weights, n)
    result = aggregator.result()
    assert list(result) == ["w", "b", "steps"]
    for name in ("w", "b"):
        assert result[name].dtype == torch.float32
        np.testing.assert_array_equal(result[name].numpy(), _numpy_mean(updates, name))
    largest = max(range(len(updates)), key=lambda k: updates[k][1])
    assert int(result["steps"]) == 100 + largest
    assert aggregator.count == 25 and aggregator.total_samples == sum(n for _, n in updates)


def test_streaming_keeps_no_update() -> None:
    reference, updates = _updates(3)
    aggregator = StreamingMean(reference)
    weights, n = updates[0]
    aggregator.add(weights, n)
    weights["w"].add_(1000.0)  # changing an update after it was added changes nothing
    aggregator.add(*updates[1])
    aggregator.add(*updates[2])
    expected = _numpy_mean([(updates[0][0], n), updates[1], updates[2]], "w")
    assert not np.array_equal(aggregator.result()["w"].numpy(), expected)  # the +1000 came after
    assert aggregator.streaming and not BufferedMean.streaming


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.tuples(
            st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=5, max_size=5),
            st.integers(min_value=0, max_value=10_000),
        ),
        min_size=1,
        max_size=12,
    ).filter(lambda rows: sum(n for _, n in rows) > 0)
)
def test_streaming_mean_matches_numpy(values: list[tuple[list[float], int]]) -> None:
    reference = {"x": torch.zeros(5)}
    aggregator = StreamingMean(reference)
    for row, n in values:
        aggregator.add({"x": torch.tensor(row, dtype=torch.float32)}, n)
    rows = np.array([row for row, _ in values], dtype=np.float32).astype(np.float64)
    counts = np.array([n for _, n in values], dtype=np.float64)
    expected = ((rows * counts[:, None]).sum(axis=0) / counts.sum()).astype(np.float32)
    np.testing.assert_allclose(aggregator.result()["x"].numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("count", [1, 2, 7, 8])
@pytest.mark.parametrize("deltas", [False, True])
def test_coordinate_median_matches_numpy(count: int, deltas: bool) -> None:
    reference, updates = _updates(count, seed=count)
    aggregator = CoordinateMedian(reference, deltas=deltas)
    for weights, n in updates:
        aggregator.add(weights, n)
    result = aggregator.result()
    for name in ("w", "b"):
        stacked = np.stack([w[name].numpy().astype(np.float64) for w, _ in updates])
        expected = np.median(stacked, axis=0).astype(np.float32)
        np.testing.assert_allclose(result[name].numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("count", "beta"), [(10, 0.1), (10, 0.25), (7, 0.2), (5, 0.0), (9, 0.45)])
def test_trimmed_mean_matches_scipy(count: int, beta: float) -> None:
    from scipy.stats import trim_mean

    reference, updates = _updates(count, seed=count)
    aggregator = TrimmedMean(reference, beta=beta)
    for weights, n in updates:
        aggregator.add(weights, n)
    result = aggregator.result()
    for name in ("w", "b"):
        stacked = np.stack([w[name].numpy().astype(np.float64) for w, _ in updates])
        expected = trim_mean(stacked, beta, axis=0).astype(np.float32)
        np.testing.assert_allclose(result[name].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_median_resists_an_outlier_the_mean_does_not() -> None:
    reference = {"x": torch.zeros(2)}
    honest = [torch.tensor([1.0, 2.0]), torch.tensor([1.1, 2.1]), torch.tensor([0.9, 1.9])]
    attack = torch.tensor([1e6, -1e6])
    median, mean = CoordinateMedian(reference), StreamingMean(reference)
    for update in [*honest, attack]:
        median.add({"x": update}, 1)
        mean.add({"x": update}, 1)
    assert torch.allclose(median.result()["x"], torch.tensor([1.05, 1.95]))
    assert float(mean.result()["x"][0]) > 1e5


def test_mismatched_updates_are_refused_and_change_nothing() -> None:
    reference = {"w": torch.zeros(2, 2), "n": torch.tensor(0)}
    aggregator = StreamingMean(reference)
    aggregator.add({"w": torch.ones(2, 2), "n": torch.tensor(1)}, 2)
    bad = [
        ({"w": torch.ones(2, 2)}, 1, r"missing \['n'\]"),
        ({"w": torch.ones(2, 2), "n": torch.tensor(1), "z": torch.ones(1)}, 1, r"extra \['z'\]"),
        ({"w": torch.ones(4), "n": torch.tensor(1)}, 1, r"'w' as \(4,\)"),
        ({"w": torch.ones(2, 2, dtype=torch.float64), "n": torch.tensor(1)}, 1, "float64"),
        ({"w": torch.ones(2, 2), "n": torch.tensor(1)}, -1, "sample count -1"),
        ({"w": [[1.0, 1.0], [1.0, 1.0]], "n": torch.tensor(1)}, 1, "not a tensor"),
    ]
    for weights, n, message in bad:
        with pytest.raises(UpdateMismatchError, match=message):
            aggregator.add(weights, n)  # type: ignore[arg-type]
    assert aggregator.count == 1
    assert aggregator.result()["w"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_nothing_to_aggregate() -> None:
    aggregator = StreamingMean({"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="cannot aggregate 0 updates"):
        aggregator.result()
    aggregator.add({"w": torch.ones(1)}, 0)
    with pytest.raises(ValueError, match="holding 0 samples"):
        aggregator.result()
    with pytest.raises(ValueError, match="beta"):
        TrimmedMean({"w": torch.zeros(1)}, beta=0.5)
    trimmed = TrimmedMean({"w": torch.zeros(1)}, beta=0.4)
    trimmed.add({"w": torch.ones(1)}, 1)
    assert trimmed.result()["w"].tolist() == [1.0]  # int(0.4 * 1) = 0 trimmed


def test_complex_tensors_average_but_have_no_median() -> None:
    reference = {"c": torch.zeros(2, dtype=torch.complex64)}
    mean, median = StreamingMean(reference), CoordinateMedian(reference)
    for value, n in ((1 + 1j, 1), (3 - 1j, 3)):
        mean.add({"c": torch.full((2,), value, dtype=torch.complex64)}, n)
        median.add({"c": torch.full((2,), value, dtype=torch.complex64)}, n)
    assert mean.result()["c"].tolist() == [2.5 - 0.5j, 2.5 - 0.5j]
    with pytest.raises(ValueError, match="complex"):
        median.result()


@pytest.mark.parametrize("deltas", [False, True])
def test_streaming_folds_big_tensors_slice_by_slice_to_the_same_mean(deltas: bool) -> None:
    # Tensors of several slices (and a ragged last one) fold without a float64 copy of the whole tensor,
    # to the very mean a whole-tensor fold gives: the exact mean rounded once.
    rng = np.random.default_rng(7)
    size = 3 * SLICE_ELEMENTS + 5
    reference = {"w": torch.from_numpy(rng.normal(size=size).astype(np.float32)).reshape(-1, 1)}
    updates = [
        ({"w": torch.from_numpy(rng.normal(scale=3, size=size).astype(np.float32)).reshape(-1, 1)}, n)
        for n in (3, 1000, 17)
    ]
    streaming = StreamingMean(reference, deltas=deltas)
    for weights, n in updates:
        streaming.add(weights, n)
    result = streaming.result()["w"]
    assert result.shape == (size, 1) and result.dtype == torch.float32
    np.testing.assert_array_equal(result.numpy(), _numpy_mean(updates, "w"))
    buffered = BufferedMean(reference, deltas=deltas)
    for weights, n in updates:
        buffered.add(weights, n)
    assert torch.equal(buffered.result()["w"], result)


# -- folding updates as they stream in (docs/protocol.md section 12.8) ---------------------------------


def _stream(fold: Fold, weights: dict[str, Tensor], piece: int = 5) -> None:
    """Hand ``weights`` to ``fold`` as a chunked download would: the manifest, then pieces of elements."""
    manifest, _ = codec.weights_manifest_of(weights)
    fold.begin(manifest)
    for name, tensor in weights.items():
        flat = tensor.reshape(-1)
        for start in range(0, flat.numel(), piece):
            fold.take(WeightSlice(name, start, flat[start : start + piece]))


@pytest.mark.parametrize("deltas", [False, True])
def test_folding_streamed_updates_gives_the_mean_adding_them_gives(deltas: bool) -> None:
    reference, updates = _updates(9)
    added, streamed = StreamingMean(reference, deltas=deltas), StreamingMean(reference, deltas=deltas)
    for weights, n in updates:
        added.add(weights, n)
        fold = streamed.fold(n)
        _stream(fold, weights)
        fold.commit()
    expected = added.result()
    assert streamed.count == added.count and streamed.total_samples == added.total_samples
    got = streamed.result()
    assert all(torch.equal(got[name], expected[name]) for name in reference)
    # written into the reference's own tensors, slice by slice: the same numbers, no new weights
    target = {name: tensor.clone() for name, tensor in reference.items()}
    streamed.result_into(target)
    assert all(torch.equal(target[name], expected[name]) for name in reference)


def test_a_streamed_update_unlike_the_model_is_refused_before_anything_is_folded() -> None:
    reference, updates = _updates(1)
    aggregator = StreamingMean(reference)
    fold = aggregator.fold(3)
    wrong = dict(updates[0][0], w=torch.zeros(4, 3))
    with pytest.raises(UpdateMismatchError, match="'w'"):
        fold.begin(codec.weights_manifest_of(wrong)[0])
    fold.abort("refused")
    assert aggregator.broken is None and aggregator.count == 0
    assert all(bool((total == 0).all()) for total in aggregator._sums.values())


def test_an_update_that_fails_halfway_breaks_the_aggregate() -> None:
    reference, updates = _updates(2)
    aggregator = StreamingMean(reference)
    good = aggregator.fold(5)
    _stream(good, updates[0][0])
    good.commit()
    half = aggregator.fold(7)
    manifest, _ = codec.weights_manifest_of(updates[1][0])
    half.begin(manifest)
    half.take(WeightSlice("w", 0, updates[1][0]["w"].reshape(-1)[:4]))
    with pytest.raises(UpdateMismatchError, match="ended before"):
        half.commit()
    # part of it is in the float64 sum, and cannot be taken out exactly: no aggregate is given
    assert aggregator.broken is not None and "cannot take it back" in aggregator.broken
    with pytest.raises(ValueError, match="cannot take it back"):
        aggregator.result()
    with pytest.raises(ValueError, match="cannot take it back"):
        aggregator.result_into({name: t.clone() for name, t in reference.items()})
