from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedproto.federated.errors import FedAvgConfigError, ResumeError
from fedproto.federated.sampling import ClientSampler, SeededSampler, sample_size

IDS = [f"client-{i}" for i in range(50)]


def test_same_seed_same_sequence_other_seed_other_sequence() -> None:
    first = [SeededSampler(7).sample(r, IDS, 5) for r in range(1, 11)]
    again = [SeededSampler(7).sample(r, IDS, 5) for r in range(1, 11)]
    other = [SeededSampler(8).sample(r, IDS, 5) for r in range(1, 11)]
    assert first == again
    assert first != other
    assert len({tuple(sample) for sample in first}) > 1  # rounds differ from one another


def test_a_round_is_drawn_from_the_seed_and_round_alone() -> None:
    # Asking for round 6 first, or after other rounds, gives the same sample (what resuming relies on).
    sampler = SeededSampler(3)
    later = sampler.sample(6, IDS, 4)
    for r in range(1, 6):
        sampler.sample(r, IDS, 4)
    assert sampler.sample(6, IDS, 4) == later
    rng = np.random.default_rng([3, 6])
    expected = [IDS[i] for i in sorted(rng.choice(len(IDS), size=4, replace=False))]
    assert later == expected


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**64 - 1),
    round=st.integers(min_value=1, max_value=10_000),
    available=st.lists(st.text(min_size=1, max_size=5), min_size=0, max_size=30, unique=True),
    data=st.data(),
)
def test_samples_are_distinct_available_ids_in_order(
    seed: int, round: int, available: list[str], data: st.DataObject
) -> None:
    size = data.draw(st.integers(min_value=0, max_value=len(available)))
    chosen = SeededSampler(seed).sample(round, available, size)
    assert len(chosen) == size == len(set(chosen))
    positions = [available.index(c) for c in chosen]
    assert positions == sorted(positions)


def test_uniform_over_many_rounds() -> None:
    counts = dict.fromkeys(IDS[:10], 0)
    sampler = SeededSampler(0)
    for r in range(1, 2001):
        for chosen in sampler.sample(r, IDS[:10], 3):
            counts[chosen] += 1
    # each client is drawn with probability 0.3: 600 expected per client, sd about 20
    assert all(500 < count < 700 for count in counts.values()), counts


def test_state_round_trip_and_checks() -> None:
    sampler = SeededSampler(11)
    assert isinstance(sampler, ClientSampler)
    restored = SeededSampler(0)
    restored.load_state_dict(sampler.state_dict())
    assert restored.seed == 11 and restored.sample(2, IDS, 3) == sampler.sample(2, IDS, 3)
    with pytest.raises(ResumeError, match="not a SeededSampler"):
        restored.load_state_dict({"kind": "other"})
    for bad in (-1, 2**64, 1.5, True, "1"):
        with pytest.raises(FedAvgConfigError, match="seed"):
            SeededSampler(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot sample 3"):
        sampler.sample(1, IDS[:2], 3)
    with pytest.raises(ValueError, match="numbered from 1"):
        sampler.sample(0, IDS, 1)


@pytest.mark.parametrize(
    ("available", "fraction", "minimum", "expected"),
    [
        (100, 0.1, 1, 10),
        (100, 0.29, 1, 29),  # 0.29 * 100 is 28.999999999999996 in floating point
        (15, 0.1, 1, 1),
        (15, 0.1, 3, 3),
        (2, 0.5, 5, 2),  # never more than are available
        (0, 1.0, 1, 0),
        (10, 1.0, 1, 10),
    ],
)
def test_sample_size(available: int, fraction: float, minimum: int, expected: int) -> None:
    assert sample_size(available, fraction_fit=fraction, min_fit_clients=minimum) == expected
