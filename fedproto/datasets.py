"""Datasets a worker holds: a features tensor and a targets tensor with one row per sample.

A worker offers named datasets for training and evaluation; clients only ever see their
:class:`DatasetDescription` (``ListDatasetsReply``), never the data. :func:`as_dataset` turns the usual
in-memory forms into a :class:`Dataset` and :func:`load_dataset_file` reads ``.pt``, ``.npz`` and
``.csv`` files. Errors here are local API errors (``TypeError``/``ValueError``), not protocol errors.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torch import Tensor

__all__ = [
    "Dataset",
    "DatasetDescription",
    "as_dataset",
    "describe",
    "load_dataset_file",
]

# Key pairs recognised in ``.pt`` dicts and ``.npz`` archives, in order of preference.
_KEY_PAIRS = (("features", "targets"), ("data", "target"), ("x", "y"))


class Dataset(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """Samples as two tensors sharing their first (sample) dimension.

    ``dataset[i]`` is ``(features[i], targets[i])``. The tensors are kept as given (no copy, no dtype
    change), so the training loop can slice whole batches out of them.
    """

    def __init__(self, features: Tensor, targets: Tensor, description: str = "") -> None:
        for name, value in (("features", features), ("targets", targets)):
            if not isinstance(value, Tensor):
                raise TypeError(f"Dataset {name} must be a torch.Tensor, not {type(value).__name__}")
            if value.dim() == 0:
                raise ValueError(f"Dataset {name} must have a sample dimension, got a 0-d tensor")
        if features.shape[0] != targets.shape[0]:
            raise ValueError(
                f"Dataset features and targets differ in sample count: "
                f"{features.shape[0]} features, {targets.shape[0]} targets"
            )
        if not isinstance(description, str):
            raise TypeError(f"Dataset description must be a str, not {type(description).__name__}")
        self._features = features
        self._targets = targets
        self._description = description

    @property
    def features(self) -> Tensor:
        """The features, one row per sample."""
        return self._features

    @property
    def targets(self) -> Tensor:
        """The targets, one row per sample."""
        return self._targets

    @property
    def description(self) -> str:
        """A free-form description given by the data owner."""
        return self._description

    def __len__(self) -> int:
        return int(self._features.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._features[index], self._targets[index]

    def __repr__(self) -> str:
        return (
            f"Dataset(samples={len(self)}, features={tuple(self._features.shape[1:])} "
            f"{self._features.dtype}, targets={tuple(self._targets.shape[1:])} {self._targets.dtype})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetDescription:
    """What a worker tells clients about one dataset (``DatasetInfo``): shapes and types, no data."""

    key: str
    sample_count: int
    feature_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    feature_dtype: torch.dtype
    target_dtype: torch.dtype
    description: str = ""


def describe(key: str, dataset: Dataset) -> DatasetDescription:
    """Describe ``dataset`` under ``key``: sample count, per-sample shapes, element types, description."""
    return DatasetDescription(
        key=key,
        sample_count=len(dataset),
        feature_shape=tuple(int(size) for size in dataset.features.shape[1:]),
        target_shape=tuple(int(size) for size in dataset.targets.shape[1:]),
        feature_dtype=dataset.features.dtype,
        target_dtype=dataset.targets.dtype,
        description=dataset.description,
    )


def _to_tensor(value: object, what: str) -> Tensor:
    """Return ``value`` as a tensor: tensors as they are, numpy arrays copied; TypeError otherwise."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == np.object_:
            raise TypeError(f"{what} is a numpy array of Python objects; expected a numeric array")
        return torch.tensor(value)
    raise TypeError(f"{what} must be a torch.Tensor or a numpy array, not {type(value).__name__}")


def _materialize(source: torch.utils.data.Dataset[Any], description: str) -> Dataset:
    """Stack the ``(x, y)`` items of a map-style dataset into one features and one targets tensor."""
    try:
        count = len(source)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"cannot use {type(source).__name__} as a dataset: it has no len(); "
            "only map-style datasets can be materialized"
        ) from None
    if count == 0:
        raise ValueError(f"cannot materialize the empty {type(source).__name__}: no sample to infer shapes")
    features: list[Tensor] = []
    targets: list[Tensor] = []
    for index in range(count):
        item = source[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(
                f"item {index} of {type(source).__name__} is not an (x, y) pair but {type(item).__name__}"
            )
        try:
            features.append(torch.as_tensor(item[0]))
            targets.append(torch.as_tensor(item[1]))
        except (TypeError, RuntimeError, ValueError) as exc:
            raise TypeError(f"item {index} of {type(source).__name__} is not numeric: {exc}") from None
    try:
        return Dataset(torch.stack(features), torch.stack(targets), description)
    except RuntimeError as exc:
        raise ValueError(
            f"the items of {type(source).__name__} cannot be stacked (differing shapes?): {exc}"
        ) from None


def as_dataset(obj: object, description: str = "") -> Dataset:
    """Return ``obj`` as a :class:`Dataset`.

    Accepted: a :class:`Dataset` (returned as is; ``description`` is ignored), a pair
    ``(features, targets)`` of torch tensors or numpy arrays (numpy arrays are copied), or any map-style
    ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs; such a dataset is read item by item
    and stacked into two tensors. Anything else raises ``TypeError``.
    """
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise TypeError(
                f"a dataset given as a sequence must be a (features, targets) pair, not {len(obj)} items"
            )
        return Dataset(_to_tensor(obj[0], "features"), _to_tensor(obj[1], "targets"), description)
    if isinstance(obj, torch.utils.data.Dataset):
        return _materialize(obj, description)
    raise TypeError(
        f"cannot make a dataset of {type(obj).__name__}: expected a fedproto Dataset, a (features, targets) "
        "pair of tensors or numpy arrays, or a map-style torch Dataset of (x, y) pairs"
    )


def _one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (torch.load's messages run long)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def _pick_pair(content: Mapping[str, Any], path: Path) -> tuple[object, object]:
    """The (features, targets) values of a dict or npz archive, by the recognised key pairs."""
    for features_key, targets_key in _KEY_PAIRS:
        if features_key in content and targets_key in content:
            return content[features_key], content[targets_key]
    names = ", ".join(f"{a!r}/{b!r}" for a, b in _KEY_PAIRS)
    raise ValueError(f"{path}: no features/targets pair found (expected keys {names}); has {sorted(content)}")


def _load_pt(path: Path) -> tuple[object, object]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable torch file: {_one_line(exc)}") from None
    if isinstance(content, Mapping):
        return _pick_pair(content, path)
    if isinstance(content, (tuple, list)) and len(content) == 2:
        return content[0], content[1]
    raise ValueError(f"{path}: expected a dict or a (features, targets) pair, found {type(content).__name__}")


def _load_npz(path: Path) -> tuple[object, object]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable .npz archive: {_one_line(exc)}") from None
    return _pick_pair(arrays, path)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path) -> tuple[object, object]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read CSV: {_one_line(exc)}") from None
    if rows and not all(_is_number(cell) for cell in rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError(f"{path}: no data rows")
    width = len(rows[0])
    if width < 2:
        raise ValueError(f"{path}: need at least two columns (features, then the target), found {width}")
    values: list[list[float]] = []
    for line_index, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"{path}: data row {line_index} has {len(row)} columns, expected {width}")
        try:
            values.append([float(cell) for cell in row])
        except ValueError:
            raise ValueError(f"{path}: data row {line_index} is not all numbers: {row}") from None
    table = np.asarray(values, dtype=np.float64)
    features = torch.from_numpy(table[:, :-1].astype(np.float32))
    target_column = table[:, -1]
    if all(math.isfinite(v) and float(v).is_integer() for v in target_column):
        targets = torch.from_numpy(target_column.astype(np.int64))
    else:
        targets = torch.from_numpy(target_column.astype(np.float32))
    return features, targets


def load_dataset_file(path: str | os.PathLike[str], description: str = "") -> Dataset:
    """Load a dataset from a ``.pt``, ``.npz`` or ``.csv`` file.

    - ``.pt``: read with ``torch.load(..., weights_only=True)``; a dict with the keys ``features`` and
      ``targets`` (or ``data``/``target``, or ``x``/``y``), or a ``(features, targets)`` pair.
    - ``.npz``: an archive with the same key names (no pickled objects).
    - ``.csv``: numbers only, one sample per row, an optional header row; the last column is the target.
      Features become float32; the targets become int64 when every value is a whole number, float32
      otherwise.

    An unknown suffix or content that is not a dataset raises ``ValueError`` naming the file.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    loaders = {".pt": _load_pt, ".pth": _load_pt, ".npz": _load_npz, ".csv": _load_csv}
    if suffix not in loaders:
        raise ValueError(f"{file}: unknown dataset file type {suffix!r} (expected .pt, .npz or .csv)")
    if not file.is_file():
        raise ValueError(f"{file}: no such file")
    features, targets = loaders[suffix](file)
    try:
        return Dataset(_to_tensor(features, "features"), _to_tensor(targets, "targets"), description)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: {exc}") from None
