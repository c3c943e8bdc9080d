"""Data for simulated federations: scikit-learn's digits, dealt out to many virtual clients.

:func:`load_digits_split` loads the digits that scikit-learn ships (1797 images of 8x8 pixels, 10
classes; nothing is downloaded) and keeps a stratified, seeded test set apart. :func:`partition` then
deals the training samples out to ``clients`` client datasets:

- ``"iid"``: a seeded shuffle cut into ``clients`` nearly equal parts (sizes differ by at most one);
- ``"dirichlet"``: label skew after Yurochkin et al. (2019) and Hsu et al. (2019): for every class, the
  shares of its samples that go to each client are drawn from a symmetric Dirichlet(``alpha``) over the
  clients. A small ``alpha`` (0.1) gives each client a few classes; a large one (100) approaches IID.

Every sample goes to exactly one client, and no client is left empty: the Dirichlet draw can leave a
client without samples (most often with many clients and a small ``alpha``), so each empty client
then takes one sample of the class it drew its largest share of, from the client holding the most
samples of that class (a client left with at least one sample). That moves as few samples as possible
and keeps each client's preferred class. It needs at least as many samples as clients, which
:func:`partition` checks first. The same arguments and seed always give the same partition, in every
process: the worker processes that host the clients compute it again instead of receiving data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "PARTITIONS",
    "DigitsSplit",
    "PartitionError",
    "client_key",
    "label_skew",
    "load_digits_split",
    "partition",
    "partition_dirichlet",
    "partition_iid",
]

#: The partition schemes :func:`partition` knows.
PARTITIONS = ("iid", "dirichlet")

#: The share of the digits kept apart as the test set.
TEST_FRACTION = 0.2

Labels = np.ndarray[Any, np.dtype[np.int64]]
Indices = np.ndarray[Any, np.dtype[np.int64]]


class PartitionError(ValueError):
    """The data cannot be partitioned as asked (an unknown scheme, alpha <= 0, fewer samples than clients)."""


def client_key(index: int) -> str:
    """The dataset key of client ``index`` on the worker that hosts it: ``client-00042``."""
    return f"client-{index:05d}"


@dataclass(frozen=True)
class DigitsSplit:
    """scikit-learn's digits, pixels scaled to 0..1 (float32), split into training and test samples."""

    x_train: np.ndarray[Any, np.dtype[np.float32]]
    y_train: Labels
    x_test: np.ndarray[Any, np.dtype[np.float32]]
    y_test: Labels

    @property
    def classes(self) -> int:
        """How many classes the labels take (10)."""
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits_split(seed: int = 0) -> DigitsSplit:
    """The digits with a stratified, seeded 20 % test set (needs scikit-learn: ``fedproto[demo]``)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("simulations on digits need scikit-learn: pip install 'fedproto[demo]'") from None
    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    targets = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        features, targets, test_size=TEST_FRACTION, stratify=targets, random_state=seed
    )
    return DigitsSplit(x_train, y_train, x_test, y_test)


def _check_counts(samples: int, clients: int) -> None:
    if not isinstance(clients, int) or isinstance(clients, bool) or clients < 1:
        raise PartitionError(f"clients must be an integer >= 1, got {clients!r}")
    if clients > samples:
        raise PartitionError(
            f"cannot give each of {clients} clients a sample: there are only {samples} samples"
        )


def partition_iid(samples: int, clients: int, seed: int) -> list[Indices]:
    """``samples`` indices shuffled with ``seed`` and cut into ``clients`` parts of nearly equal size."""
    _check_counts(samples, clients)
    order = np.random.default_rng(seed).permutation(samples).astype(np.int64)
    return [np.sort(part) for part in np.array_split(order, clients)]


def partition_dirichlet(labels: Labels, clients: int, alpha: float, seed: int) -> list[Indices]:
    """Indices of ``labels`` dealt to ``clients`` with Dirichlet(``alpha``) label skew (see the module)."""
    labels = np.asarray(labels)
    _check_counts(len(labels), clients)
    if (
        not isinstance(alpha, (int, float))
        or isinstance(alpha, bool)
        or not alpha > 0
        or alpha == float("inf")
    ):
        raise PartitionError(f"alpha must be a number > 0, got {alpha!r}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    # shares[c, k]: the share of class c's samples that client k gets
    shares = rng.dirichlet(np.full(clients, float(alpha)), size=len(classes))
    members: list[list[np.ndarray[Any, Any]]] = []  # members[c][k]: client k's samples of class c
    for row, label in enumerate(classes):
        of_class = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.round(np.cumsum(shares[row])[:-1] * len(of_class)).astype(int)
        members.append(list(np.split(of_class, cuts)))
    counts = np.array([[len(part) for part in row] for row in members])  # classes x clients
    for empty in np.flatnonzero(counts.sum(axis=0) == 0):
        _fill(int(empty), shares, counts, members)
    return [
        np.sort(np.concatenate([members[row][k] for row in range(len(classes))]).astype(np.int64))
        for k in range(clients)
    ]


def _fill(
    empty: int, shares: np.ndarray[Any, Any], counts: np.ndarray[Any, Any], members: list[list[Any]]
) -> None:
    """Give the empty client one sample, of the class it drew the largest share of, if a donor allows."""
    totals = counts.sum(axis=0)
    for row in np.argsort(-shares[:, empty], kind="stable"):
        # donors: clients holding this class that keep a sample after giving one
        holding = np.where((counts[row] > 0) & (totals > 1), counts[row], 0)
        donor = int(np.argmax(holding))
        if holding[donor] == 0:
            continue
        sample, members[row][donor] = members[row][donor][-1:], members[row][donor][:-1]
        members[row][empty] = sample
        counts[row, donor] -= 1
        counts[row, empty] += 1
        return
    # unreachable when samples >= clients: some client holds two samples, so some class has a donor
    raise PartitionError("no client can spare a sample")  # pragma: no cover


def partition(
    labels: Labels,
    clients: int,
    *,
    scheme: Literal["iid", "dirichlet"] | str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> list[Indices]:
    """Deal the samples behind ``labels`` to ``clients`` clients; one sorted index array per client.

    ``scheme`` is ``"iid"`` or ``"dirichlet"`` (``alpha`` is then the Dirichlet concentration). Raises
    :class:`PartitionError` for an unknown scheme, ``alpha <= 0`` or more clients than samples.
    """
    if scheme == "iid":
        return partition_iid(len(labels), clients, seed)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, clients, alpha, seed)
    raise PartitionError(f"unknown partition {scheme!r}; choose among {', '.join(PARTITIONS)}")


def label_skew(labels: Labels, parts: Sequence[Indices]) -> float:
    """How far the clients' label mixes are from the whole data's: the mean total-variation distance.

    0 when every client holds the classes in the data's proportions; close to 1 when each client holds
    one class of many. Each client counts once, whatever its size.
    """
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1
    overall = np.bincount(labels, minlength=classes) / len(labels)
    distances = []
    for part in parts:
        if len(part) == 0:
            continue
        mix = np.bincount(labels[part], minlength=classes) / len(part)
        distances.append(0.5 * float(np.abs(mix - overall).sum()))
    return float(np.mean(distances)) if distances else 0.0
