from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from fedproto.federated.averaging import average_weights


def test_weighted_by_sample_counts() -> None:
    averaged = average_weights([({"w": torch.tensor([1.0])}, 1), ({"w": torch.tensor([4.0])}, 3)])
    torch.testing.assert_close(averaged["w"], torch.tensor([3.25]))


def test_keeps_names_in_order_and_dtypes() -> None:
    first = {
        "b": torch.tensor([1.0, 2.0], dtype=torch.float16),
        "a": torch.tensor([[1.0]], dtype=torch.bfloat16),
        "c": torch.tensor([1 + 1j], dtype=torch.complex64),
    }
    second = {
        "a": torch.tensor([[3.0]], dtype=torch.bfloat16),
        "c": torch.tensor([3 - 1j], dtype=torch.complex64),
        "b": torch.tensor([3.0, 4.0], dtype=torch.float16),
    }
    averaged = average_weights([(first, 2), (second, 2)])
    assert list(averaged) == ["b", "a", "c"]
    assert {name: tensor.dtype for name, tensor in averaged.items()} == {
        "b": torch.float16,
        "a": torch.bfloat16,
        "c": torch.complex64,
    }
    assert averaged["b"].tolist() == [2.0, 3.0]
    assert averaged["a"].tolist() == [[2.0]]
    assert averaged["c"].tolist() == [2 + 0j]


def test_integer_buffers_come_from_the_largest_update() -> None:
    small = {"w": torch.tensor([0.0]), "num_batches_tracked": torch.tensor(10), "mask": torch.tensor([True])}
    large = {"w": torch.tensor([1.0]), "num_batches_tracked": torch.tensor(7), "mask": torch.tensor([False])}
    tie = {"w": torch.tensor([2.0]), "num_batches_tracked": torch.tensor(3), "mask": torch.tensor([True])}
    averaged = average_weights([(small, 1), (large, 5), (tie, 5)])
    assert int(averaged["num_batches_tracked"]) == 7
    assert averaged["num_batches_tracked"].dtype == torch.int64
    assert averaged["mask"].tolist() == [False]
    torch.testing.assert_close(averaged["w"], torch.tensor([15.0 / 11.0]))


def test_result_shares_no_memory_with_the_inputs() -> None:
    update = {"w": torch.ones(3), "n": torch.tensor(1)}
    averaged = average_weights([(update, 1)])
    averaged["w"].add_(1)
    averaged["n"].add_(1)
    assert update["w"].tolist() == [1.0, 1.0, 1.0]
    assert int(update["n"]) == 1


def test_updates_without_samples_count_for_nothing() -> None:
    averaged = average_weights([({"w": torch.tensor(100.0)}, 0), ({"w": torch.tensor(2.0)}, 4)])
    assert float(averaged["w"]) == 2.0


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], "no updates"),
        ([({"w": torch.zeros(1)}, 0), ({"w": torch.ones(1)}, 0)], "0 samples"),
        ([({"w": torch.zeros(1)}, -1)], "sample count -1"),
        ([({"w": torch.zeros(1)}, 1.5)], "sample count 1.5"),
        ([({"w": torch.zeros(1)}, 1), ({"v": torch.zeros(1)}, 1)], r"extra \['v'\], missing \['w'\]"),
        ([({"w": torch.zeros(1)}, 1), ({"w": torch.zeros(2)}, 1)], r"'w' as \(2,\)"),
        ([({"w": torch.zeros(1)}, 1), ({"w": torch.zeros(1, dtype=torch.float64)}, 1)], "torch.float64"),
    ],
)
def test_errors(updates: list[tuple[dict[str, Tensor], int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        average_weights(updates)


_values = st.lists(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32), min_size=3, max_size=3
)


@settings(max_examples=50, deadline=None)
@given(
    updates=st.lists(
        st.tuples(_values, st.integers(min_value=0, max_value=1000)), min_size=1, max_size=6
    ).filter(lambda updates: sum(count for _, count in updates) > 0)
)
def test_average_is_the_weighted_mean(updates: list[tuple[list[float], int]]) -> None:
    weights = [({"w": torch.tensor(values)}, count) for values, count in updates]
    averaged = average_weights(weights)["w"]
    total = sum(count for _, count in updates)
    expected = [sum(values[i] * count for values, count in updates) / total for i in range(3)]
    torch.testing.assert_close(averaged, torch.tensor(expected))
    contributing = torch.stack([tensor["w"] for tensor, count in weights if count > 0])
    assert bool((averaged >= contributing.min(dim=0).values).all())
    assert bool((averaged <= contributing.max(dim=0).values).all())
    reordered = average_weights(list(reversed(weights)))["w"]
    torch.testing.assert_close(reordered, averaged)


@settings(max_examples=25, deadline=None)
@given(values=_values, counts=st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=5))
def test_averaging_equal_weights_changes_nothing(values: list[float], counts: list[int]) -> None:
    tensor = torch.tensor(values)
    averaged = average_weights([({"w": tensor.clone()}, count) for count in counts])
    assert torch.equal(averaged["w"], tensor)
