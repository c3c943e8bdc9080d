from __future__ import annotations

import numpy as np
import pytest

from fedproto.simulation.partition import (
    PartitionError,
    client_key,
    label_skew,
    load_digits_split,
    partition,
    partition_dirichlet,
    partition_iid,
)

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(0)


def _assert_exact_cover(parts, samples):
    joined = np.concatenate(parts)
    assert len(joined) == samples  # nothing used twice...
    assert np.array_equal(np.sort(joined), np.arange(samples))  # ...and nothing left out
    assert all(len(part) > 0 for part in parts)
    assert all(np.array_equal(part, np.sort(part)) for part in parts)


def test_digits_split_is_stratified_and_seeded(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.x_train.dtype == np.float32 and digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    assert digits.classes == 10
    test_mix = np.bincount(digits.y_test) / len(digits.y_test)
    train_mix = np.bincount(digits.y_train) / len(digits.y_train)
    assert np.abs(test_mix - train_mix).max() < 0.01
    again = load_digits_split(0)
    assert np.array_equal(again.y_train, digits.y_train)
    assert not np.array_equal(load_digits_split(1).y_train, digits.y_train)


def test_client_keys_sort_in_client_order():
    assert client_key(42) == "client-00042"
    assert sorted(client_key(i) for i in (3, 20, 100)) == [client_key(3), client_key(20), client_key(100)]


@pytest.mark.parametrize("clients", [1, 7, 100, 1437])
def test_iid_sizes_differ_by_at_most_one(digits, clients):
    parts = partition_iid(len(digits.y_train), clients, seed=4)
    _assert_exact_cover(parts, len(digits.y_train))
    sizes = [len(part) for part in parts]
    assert len(parts) == clients and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("alpha", [0.05, 0.5, 5.0])
@pytest.mark.parametrize("clients", [10, 1000])
def test_dirichlet_uses_every_sample_once_and_leaves_no_client_empty(digits, clients, alpha):
    parts = partition_dirichlet(digits.y_train, clients, alpha, seed=2)
    assert len(parts) == clients
    _assert_exact_cover(parts, len(digits.y_train))


def test_dirichlet_with_as_many_clients_as_samples_gives_one_each(digits):
    parts = partition_dirichlet(digits.y_train, len(digits.y_train), 0.1, seed=0)
    assert sorted(len(part) for part in parts) == [1] * len(digits.y_train)


def test_dirichlet_skew_follows_alpha(digits):
    # the mean total-variation distance of the clients' label mixes from the overall mix, over seeds
    def skew(alpha: float) -> float:
        return float(
            np.mean(
                [
                    label_skew(digits.y_train, partition_dirichlet(digits.y_train, 20, alpha, s))
                    for s in range(3)
                ]
            )
        )

    iid = np.mean([label_skew(digits.y_train, partition_iid(len(digits.y_train), 20, s)) for s in range(3)])
    strong, medium, mild = skew(0.05), skew(0.5), skew(100.0)
    assert strong > 0.7  # nearly one class per client
    assert 0.3 < medium < strong
    assert mild < 0.15 and mild < medium
    # a large alpha shares out every class in nearly equal parts: as balanced as a random IID split, or more
    assert mild <= iid
    # a small alpha concentrates each client on few classes: most of its samples are one class
    parts = partition_dirichlet(digits.y_train, 20, 0.05, 0)
    top = [np.bincount(digits.y_train[p]).max() / len(p) for p in parts]
    assert np.median(top) > 0.8


def test_label_skew_bounds(digits):
    one_class_each = [np.flatnonzero(digits.y_train == c) for c in range(10)]
    assert label_skew(digits.y_train, one_class_each) == pytest.approx(0.9, abs=0.01)
    assert label_skew(digits.y_train, [np.arange(len(digits.y_train))]) == 0.0


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_partition_other_seed_another(digits, scheme):
    first = partition(digits.y_train, 50, scheme=scheme, alpha=0.3, seed=11)
    again = partition(digits.y_train, 50, scheme=scheme, alpha=0.3, seed=11)
    other = partition(digits.y_train, 50, scheme=scheme, alpha=0.3, seed=12)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "shards"}, "unknown partition 'shards'"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha must be a number > 0"),
        ({"scheme": "dirichlet", "alpha": -1.0}, "alpha must be a number > 0"),
        ({"scheme": "dirichlet", "alpha": float("nan")}, "alpha must be a number > 0"),
        ({"clients": 0}, "clients must be an integer >= 1"),
        ({"clients": 1438}, "only 1437 samples"),
        ({"clients": 1438, "scheme": "dirichlet"}, "only 1437 samples"),
    ],
)
def test_bad_arguments_raise_partition_error(digits, kwargs, message):
    clients = kwargs.pop("clients", 10)
    with pytest.raises(PartitionError, match=message):
        partition(digits.y_train, clients, **kwargs)
    assert issubclass(PartitionError, ValueError)
