"""netslim.data: the IDX reader, the three built-in sources, IDX directories and the loaders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from netslim.data import (
    DATASET_NAMES,
    FASHION_MNIST_DIR,
    DataInfo,
    dataset_info,
    load_dataset,
    make_loaders,
    read_idx,
    subset_indices,
    write_idx,
)
from netslim.data.fashion import clear_cache
from netslim.errors import ConfigError, DataError

HAS_FASHION = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def _fake_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> Path:
    """An MNIST-layout directory with random 28×28 images and balanced labels."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            root / f"{prefix}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(
            root / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8)
        )
    clear_cache()
    return root


# --- IDX format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 7], dtype=np.int8),
        np.array([[1, -2], [300, 4]], dtype=np.int16),
        np.array([70000, -1], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([np.pi, -np.e], dtype=np.float64),
    ],
    ids=lambda a: f"{a.dtype}-{a.ndim}d",
)
@pytest.mark.parametrize("name", ["data.idx", "data.idx.gz"])
def test_idx_round_trip(tmp_path: Path, array: np.ndarray, name: str) -> None:
    path = tmp_path / name
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_gzip_detected_from_content(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes((tmp_path / "a.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(renamed), array)


def test_idx_written_gzip_is_reproducible(tmp_path: Path) -> None:
    array = np.arange(50, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def _valid_idx() -> bytes:
    return (
        bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "bad magic"),
        (b"\x01\x02\x08\x01" + bytes(8), "bad magic"),
        (bytes([0, 0, 0x42, 1]) + bytes(8), "bad magic"),
        (bytes([0, 0, 0x08, 3]) + bytes(5), "truncated IDX header"),
        (_valid_idx()[:-1], "truncated"),
        (_valid_idx() + b"\x00", "trailing bytes"),
        (gzip.compress(_valid_idx())[:-12], "gzip"),
        (b"\x1f\x8b" + b"not really gzip data", "gzip"),
    ],
    ids=[
        "empty",
        "magic",
        "type-code",
        "header",
        "payload",
        "trailing",
        "gzip-truncated",
        "gzip-garbage",
    ],
)
def test_idx_corrupt_files_raise_data_error(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.gz")


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        write_idx(tmp_path / "x.idx", np.array([1 + 2j]))


# --- IDX directories ----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_as_dataset(tmp_path: Path, gz: bool) -> None:
    root = _fake_mnist(tmp_path / "mnist", gz=gz)
    train = load_dataset(root, "train")
    test = load_dataset(str(root), "test")
    images, labels = train.tensors
    assert images.shape == (60, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and len(test) == 20
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 0.02
    info = dataset_info(root)
    assert info.input_shape == (1, 28, 28) and info.num_classes == 10 and info.name == str(root)


def test_fashion_mnist_from_root(tmp_path: Path) -> None:
    root = _fake_mnist(tmp_path / "copy")
    data = load_dataset("fashion-mnist", "test", root=root)
    assert len(data) == 20 and data.info.name == "fashion-mnist"


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path / "absent")


def test_idx_directory_with_mismatched_files(tmp_path: Path) -> None:
    root = _fake_mnist(tmp_path / "bad")
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="labels"):
        load_dataset(root)


def test_idx_directory_cache_sees_replaced_files(tmp_path: Path) -> None:
    root = _fake_mnist(tmp_path / "m")
    assert len(load_dataset(root, "test")) == 20
    rng = np.random.default_rng(1)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
    assert len(load_dataset(root, "test")) == 5


@pytest.mark.skipif(not HAS_FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_full() -> None:
    clear_cache()
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert train.tensors[0].shape == (60000, 1, 28, 28)
    assert test.tensors[0].shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(train.tensors[1]), torch.full((10,), 6000))
    assert (
        abs(float(train.tensors[0].mean())) < 1e-3 and abs(float(train.tensors[0].std()) - 1) < 1e-3
    )


# --- digits and synthetic -----------------------------------------------------------------------


def test_digits() -> None:
    pytest.importorskip("sklearn")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and 0.18 < len(test) / 1797 < 0.22
    assert train.tensors[0].shape[1:] == (1, 28, 28)
    assert torch.bincount(test.tensors[1]).min() >= 30  # stratified: every class in the test split
    again = load_dataset("digits", "test", seed=5)
    assert torch.equal(again.tensors[0], test.tensors[0]), "the split must not depend on the seed"


def test_synthetic_is_deterministic_and_normalised() -> None:
    a, b = load_dataset("synthetic", "train"), load_dataset("synthetic", "train")
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    images = a.tensors[0]
    assert images.shape == (6000, 1, 28, 28) and len(load_dataset("synthetic", "test")) == 1000
    assert abs(float(images.mean())) < 0.01 and abs(float(images.std()) - 1) < 0.01
    assert a.info == DataInfo("synthetic", mean=a.info.mean, std=a.info.std)


# --- subsets, names, loaders --------------------------------------------------------------------


def test_limit_is_deterministic_balanced_and_seeded() -> None:
    first = load_dataset("synthetic", "train", limit=100, seed=1)
    again = load_dataset("synthetic", "train", limit=100, seed=1)
    other = load_dataset("synthetic", "train", limit=100, seed=2)
    assert len(first) == 100 and torch.equal(first.tensors[0], again.tensors[0])
    assert not torch.equal(first.tensors[0], other.tensors[0])
    assert torch.equal(torch.bincount(first.tensors[1]), torch.full((10,), 10))
    assert len(load_dataset("synthetic", "test", limit=10**6)) == 1000


def test_subset_indices_round_robin() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    chosen = subset_indices(labels, 20, seed=0)
    assert len(set(chosen.tolist())) == 20 and np.all(np.diff(chosen) > 0)
    assert np.bincount(labels[chosen]).tolist() == [10, 10]


@pytest.mark.parametrize("name", ["cifar10", "mnist", ""])
def test_unknown_name_lists_valid_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset(name)
    for valid in DATASET_NAMES:
        assert valid in str(info.value)
    assert "directory" in str(info.value)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(str(tmp_path / "no" / "such"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "val"},
        {"limit": 0},
        {"limit": -5},
        {"limit": 2.5},
        {"root": "/tmp", "name_or_dir": "digits"},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    kwargs = {"name_or_dir": "synthetic", **kwargs}
    with pytest.raises(ConfigError):
        load_dataset(**kwargs)


def test_make_loaders_are_repeatable() -> None:
    def first_batch() -> tuple[torch.Tensor, torch.Tensor]:
        train, _ = make_loaders("synthetic", batch_size=32, limit_train=200, limit_test=50, seed=3)
        return next(iter(train))

    torch.manual_seed(0)
    x1, y1 = first_batch()
    torch.manual_seed(99)  # the global RNG must not matter
    x2, y2 = first_batch()
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (32, 1, 28, 28)
    train, test = make_loaders("synthetic", batch_size=32, limit_train=200, limit_test=50)
    assert len(train) == 7 and len(test.dataset) == 50
    with pytest.raises(ConfigError):
        make_loaders("synthetic", batch_size=0)
