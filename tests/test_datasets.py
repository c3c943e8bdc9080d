from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from fedproto.datasets import Dataset, DatasetDescription, as_dataset, describe, load_dataset_file


class PairsDataset(torch.utils.data.Dataset[tuple[list[float], int]]):
    """A map-style dataset of Python values, as user code often has."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[list[float], int]:
        return [float(index), float(index) * 2], index % 3


class TriplesDataset(torch.utils.data.Dataset[tuple[int, int, int]]):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        return index, index, index


class StreamDataset(torch.utils.data.IterableDataset[tuple[int, int]]):
    def __iter__(self):  # type: ignore[no-untyped-def]
        yield 1, 2


# -- Dataset -------------------------------------------------------------------------------------------


def test_dataset_items_and_properties() -> None:
    features = torch.arange(12.0).reshape(4, 3)
    targets = torch.tensor([0, 1, 0, 1])
    dataset = Dataset(features, targets, "four samples")
    assert len(dataset) == 4
    assert dataset.features is features
    assert dataset.targets is targets
    assert dataset.description == "four samples"
    x, y = dataset[2]
    torch.testing.assert_close(x, torch.tensor([6.0, 7.0, 8.0]))
    assert int(y) == 0
    assert "samples=4" in repr(dataset)


def test_dataset_rejects_mismatched_sample_counts() -> None:
    with pytest.raises(ValueError, match="3 features, 2 targets"):
        Dataset(torch.zeros(3, 2), torch.zeros(2))


def test_dataset_rejects_non_tensors_and_scalars() -> None:
    with pytest.raises(TypeError, match=r"features must be a torch\.Tensor"):
        Dataset([[1.0]], torch.zeros(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0-d"):
        Dataset(torch.zeros(1), torch.tensor(1))


# -- as_dataset ----------------------------------------------------------------------------------------


def test_as_dataset_returns_a_dataset_as_is() -> None:
    dataset = Dataset(torch.zeros(2, 1), torch.zeros(2))
    assert as_dataset(dataset) is dataset


def test_as_dataset_from_a_pair_of_tensors() -> None:
    features, targets = torch.randn(5, 2), torch.arange(5)
    dataset = as_dataset((features, targets), "pair")
    assert dataset.features is features
    assert dataset.targets is targets
    assert dataset.description == "pair"


def test_as_dataset_from_numpy_arrays_copies() -> None:
    features = np.arange(6, dtype=np.float32).reshape(3, 2)
    targets = np.array([1, 0, 1])
    dataset = as_dataset([features, targets])
    assert dataset.features.dtype == torch.float32
    assert dataset.targets.dtype == torch.int64
    features[0, 0] = 100.0
    assert float(dataset.features[0, 0]) == 0.0


def test_as_dataset_from_a_tensor_dataset() -> None:
    features, targets = torch.randn(4, 3), torch.tensor([1, 2, 3, 4])
    dataset = as_dataset(TensorDataset(features, targets))
    torch.testing.assert_close(dataset.features, features)
    torch.testing.assert_close(dataset.targets, targets)


def test_as_dataset_materializes_a_map_style_dataset() -> None:
    dataset = as_dataset(PairsDataset(5), "pairs")
    assert dataset.features.shape == (5, 2)
    torch.testing.assert_close(dataset.features[3], torch.tensor([3.0, 6.0]))
    assert dataset.targets.tolist() == [0, 1, 2, 0, 1]
    assert dataset.description == "pairs"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (42, "cannot make a dataset of int"),
        ((torch.zeros(2),), "pair, not 1 items"),
        ((torch.zeros(2), [1, 2]), "targets must be a torch.Tensor or a numpy array"),
        ((np.array([object()]), np.zeros(1)), "numpy array of Python objects"),
        (TriplesDataset(), r"not an \(x, y\) pair"),
        (StreamDataset(), "no len"),
    ],
)
def test_as_dataset_rejects_other_inputs(obj: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        as_dataset(obj)


def test_as_dataset_rejects_an_empty_map_style_dataset() -> None:
    with pytest.raises(ValueError, match="empty"):
        as_dataset(PairsDataset(0))


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=20),
    feature_shape=st.lists(st.integers(min_value=1, max_value=3), max_size=2),
    target_shape=st.lists(st.integers(min_value=1, max_value=3), max_size=1),
)
def test_describe_reports_per_sample_shapes(
    count: int, feature_shape: list[int], target_shape: list[int]
) -> None:
    dataset = Dataset(
        torch.zeros(count, *feature_shape, dtype=torch.float64),
        torch.zeros(count, *target_shape, dtype=torch.int32),
        "zeros",
    )
    assert describe("zeros", dataset) == DatasetDescription(
        key="zeros",
        sample_count=count,
        feature_shape=tuple(feature_shape),
        target_shape=tuple(target_shape),
        feature_dtype=torch.float64,
        target_dtype=torch.int32,
        description="zeros",
    )


# -- load_dataset_file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features_key", "targets_key"), [("features", "targets"), ("data", "target"), ("x", "y")]
)
def test_load_pt_dict(tmp_path: Path, features_key: str, targets_key: str) -> None:
    features, targets = torch.randn(6, 2), torch.arange(6)
    path = tmp_path / "set.pt"
    torch.save({features_key: features, targets_key: targets}, path)
    dataset = load_dataset_file(path, "from disk")
    torch.testing.assert_close(dataset.features, features)
    torch.testing.assert_close(dataset.targets, targets)
    assert dataset.description == "from disk"


def test_load_pt_pair(tmp_path: Path) -> None:
    features, targets = torch.randn(3, 4), torch.randn(3, 1)
    path = tmp_path / "pair.pt"
    torch.save((features, targets), path)
    dataset = load_dataset_file(str(path))
    torch.testing.assert_close(dataset.features, features)
    torch.testing.assert_close(dataset.targets, targets)


def test_load_npz(tmp_path: Path) -> None:
    features, targets = np.random.default_rng(0).normal(size=(5, 3)), np.arange(5)
    path = tmp_path / "set.npz"
    np.savez(path, x=features, y=targets)
    dataset = load_dataset_file(path)
    assert dataset.features.dtype == torch.float64
    np.testing.assert_array_equal(dataset.features.numpy(), features)
    assert dataset.targets.tolist() == [0, 1, 2, 3, 4]


def test_load_csv_with_header_and_integer_targets(tmp_path: Path) -> None:
    path = tmp_path / "xor.csv"
    path.write_text("a,b,label\n0,0,0\n0,1,1\n1,0,1\n\n1,1,0\n")
    dataset = load_dataset_file(path)
    assert dataset.features.dtype == torch.float32
    assert dataset.features.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert dataset.targets.dtype == torch.int64
    assert dataset.targets.tolist() == [0, 1, 1, 0]


def test_load_csv_without_header_and_float_targets(tmp_path: Path) -> None:
    path = tmp_path / "regression.csv"
    path.write_text("1.5,2,0.25\n-3,4e1,1.0\n")
    dataset = load_dataset_file(path)
    assert dataset.features.tolist() == [[1.5, 2.0], [-3.0, 40.0]]
    assert dataset.targets.dtype == torch.float32
    assert dataset.targets.tolist() == [0.25, 1.0]


class _NotAllowed:
    pass


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("set.txt", b"1,2\n", "unknown dataset file type '.txt'", id="suffix"),
        pytest.param("set.csv", b"a,b\n", "no data rows", id="csv-header-only"),
        pytest.param("set.csv", b"1\n2\n", "at least two columns", id="csv-one-column"),
        pytest.param("set.csv", b"1,2\n3\n", "row 2 has 1 columns", id="csv-ragged"),
        pytest.param("set.csv", b"1,2\n3,x\n", "row 2 is not all numbers", id="csv-text"),
        pytest.param("set.csv", b"\xff\xfe,1\n", "cannot read CSV", id="csv-not-utf8"),
        pytest.param("set.pt", b"not a torch file", "not a loadable torch file", id="pt-garbage"),
        pytest.param("set.pt", _torch_saved(_NotAllowed()), "not a loadable torch file", id="pt-object"),
        pytest.param("set.npz", b"not an archive", "not a loadable .npz archive", id="npz-garbage"),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_dataset_file(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_load_rejects_bad_content(tmp_path: Path) -> None:
    wrong_keys = tmp_path / "keys.pt"
    torch.save({"inputs": torch.zeros(2), "labels": torch.zeros(2)}, wrong_keys)
    with pytest.raises(ValueError, match="no features/targets pair"):
        load_dataset_file(wrong_keys)
    single = tmp_path / "single.pt"
    torch.save(torch.zeros(3), single)
    with pytest.raises(ValueError, match="expected a dict"):
        load_dataset_file(single)
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, features=np.zeros((3, 2)), targets=np.zeros(2))
    with pytest.raises(ValueError, match=r"mismatched.npz: .*3 features, 2 targets"):
        load_dataset_file(mismatched)
    with pytest.raises(ValueError, match="no such file"):
        load_dataset_file(tmp_path / "missing.csv")
