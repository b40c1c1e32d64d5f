"""One entry point for every data source: a ``--data`` spec → normalised tensors.

Specs: a built-in name, a directory of MNIST-style IDX files, an image-folder tree
(:mod:`netslim.data.folder`) or ``hf:PATH``, a ``datasets.save_to_disk`` directory
(:mod:`netslim.data.hf`). The built-in sets yield 1×28×28 images and 10 classes so any zoo model
runs on any of them; they are normalised with fixed per-data-set statistics (not the statistics of
the requested subset), so a subset, the full set and the test split all see the same scaling.
Folders and ``hf:`` sets are preprocessed as the model expects (:mod:`netslim.data.preprocess`),
so their loaders take the model; their test split is the folder's val/ (or held-out) split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from netslim.data.base import DataInfo, DataOptions, ImageDataset, subset_indices
from netslim.data.digits import load_digits_split
from netslim.data.fashion import FASHION_MNIST_DIR, idx_files, load_idx_split
from netslim.data.synthetic import load_synthetic_split
from netslim.errors import ConfigError

DATASET_NAMES = ("fashion-mnist", "digits", "synthetic")
SPLITS = ("train", "test")

# (mean, std) of the training split after scaling pixels to [0, 1].
_STATS = {
    "fashion-mnist": (0.2860, 0.3530),
    "digits": (0.3056, 0.3251),
    "synthetic": (0.5056, 0.2952),
}


def _resolve(
    name_or_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None
) -> tuple[str, Path | None]:
    """``(kind, directory)``: a built-in name, ``"idx"``, ``"folder"`` or ``"hf"``."""
    if isinstance(name_or_dir, str) and name_or_dir.startswith("hf:"):
        if root is not None:
            raise ConfigError("root= applies only to 'fashion-mnist'")
        path = Path(name_or_dir[3:]).expanduser()
        if not name_or_dir[3:].strip() or not path.is_dir():
            raise ConfigError(
                f"--data {name_or_dir}: expected hf:DIR, a directory written by "
                "datasets' save_to_disk"
            )
        return "hf", path
    if isinstance(name_or_dir, str):
        key = name_or_dir.strip().lower().replace("_", "-")
        if key in DATASET_NAMES:
            if root is not None and key != "fashion-mnist":
                raise ConfigError(f"root= applies only to 'fashion-mnist', not {key!r}")
            if key == "fashion-mnist":
                return key, Path(root) if root is not None else FASHION_MNIST_DIR
            return key, None
    if root is not None:
        raise ConfigError(
            "root= applies only to 'fashion-mnist'; pass the directory itself instead"
        )
    path = Path(name_or_dir).expanduser()
    if str(name_or_dir).strip() and path.is_dir():  # Path("") would mean the current directory
        from netslim.data.folder import looks_like_folder

        has_idx = any(path.glob("train-images-idx3-ubyte*"))
        return ("folder" if not has_idx and looks_like_folder(path) else "idx"), path
    text = str(name_or_dir)
    names = ", ".join(repr(n) for n in DATASET_NAMES)
    looks_like_path = (
        isinstance(name_or_dir, os.PathLike) or os.sep in text or text.startswith((".", "~"))
    )
    if path.exists() and text.strip():
        what = f"{text!r} is not a directory"
    elif looks_like_path:
        what = f"directory {text!r} does not exist"
    else:
        what = f"unknown data set {text!r}"
    raise ConfigError(
        f"{what}; use one of {names}, a directory holding MNIST-style IDX files or image class "
        "folders (train/ and val/), or hf:DIR"
    )


def data_kind(name_or_dir: str | os.PathLike[str]) -> str:
    """``"fashion-mnist"``, ``"digits"``, ``"synthetic"``, ``"idx"``, ``"folder"`` or ``"hf"``."""
    return _resolve(name_or_dir, None)[0]


def dataset_info(
    name_or_dir: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    options: DataOptions | None = None,
) -> DataInfo:
    """Shape, class count and normalisation of a data set (a directory: from its training split).

    For folders and ``hf:`` image sets the shape is the data's usual one before the model's
    preprocessing; the loaders' ``dataset.info`` holds the shape after it.
    """
    kind, directory = _resolve(name_or_dir, root)
    options = options or DataOptions()
    if kind == "folder":
        from netslim.data.folder import scan_folder

        tree = scan_folder(directory, options.val_split)
        return DataInfo(
            str(directory),
            input_shape=(tree.channels, *tree.size),
            num_classes=len(tree.classes),
            preprocessing=f"image folder ({tree.layout})",
        )
    if kind == "hf":
        from netslim.data.hf import hf_info

        return hf_info(directory, options)
    if kind != "idx":
        mean, std = _STATS[kind]
        return DataInfo(kind, mean=mean, std=std)
    assert directory is not None
    images, labels = load_idx_split(directory, "train")
    mean, std = _idx_stats(directory)
    return DataInfo(
        str(directory),
        input_shape=(1, *images.shape[1:]),
        num_classes=int(labels.max()) + 1 if len(labels) else 0,
        mean=mean,
        std=std,
    )


_IDX_STATS: dict[tuple[str, int, int], tuple[float, float]] = {}


def _idx_stats(directory: Path) -> tuple[float, float]:
    """Mean/std of a user directory's training images, computed once per file version."""
    path = idx_files(directory, "train")[0]
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _IDX_STATS:
        images, _ = load_idx_split(directory, "train")
        # A histogram of the 256 byte values gives exact moments without a float copy.
        counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
        values = np.arange(256) / 255.0
        total = max(counts.sum(), 1.0)
        mean = float((counts * values).sum() / total)
        std = float(((counts * (values - mean) ** 2).sum() / total) ** 0.5)
        _IDX_STATS[key] = (mean, std if std > 1e-6 else 1.0)
    return _IDX_STATS[key]


def _check_limit(limit: int | None, what: str) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{what} must be a positive integer or None, got {limit!r}")


def load_dataset(
    name_or_dir: str | os.PathLike[str],
    split: str = "train",
    *,
    limit: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    model: torch.nn.Module | None = None,
    options: DataOptions | None = None,
) -> torch.utils.data.Dataset:
    """Normalised ``float32`` inputs and ``int64`` labels of one split; ``dataset.info`` says
    the input shape.

    ``name_or_dir`` is ``"fashion-mnist"`` (from ``root``, default the Debian package's
    directory), ``"digits"``, ``"synthetic"``, a directory of MNIST-style IDX files, an image
    folder tree or ``hf:DIR``; the last two are preprocessed for ``model`` (``"test"`` is their
    validation split). ``limit`` keeps a class-balanced subset chosen by ``seed``; ``seed`` changes
    nothing else (the synthetic task, the digits split and the folders' held-out split are fixed,
    so test scores stay comparable).
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    _check_limit(limit, "limit")
    kind, directory = _resolve(name_or_dir, root)
    options = options or DataOptions()
    if kind == "folder":
        from netslim.data.folder import load_folder_split

        return load_folder_split(directory, split, options, model, limit=limit, seed=seed)
    if kind == "hf":
        from netslim.data.hf import load_hf_split

        return load_hf_split(directory, split, options, model, limit=limit, seed=seed)
    info = dataset_info(name_or_dir, root=root)
    if kind == "digits":
        images, labels = load_digits_split(split)
    elif kind == "synthetic":
        images, labels = load_synthetic_split(split)
    else:
        assert directory is not None
        images, labels = load_idx_split(directory, split)
    keep = subset_indices(labels, limit, seed) if limit is not None else slice(None)
    x = torch.tensor(images[keep])
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = x.sub_(info.mean).div_(info.std)
    return ImageDataset(x, torch.tensor(labels[keep], dtype=torch.int64), info)


def make_loaders(
    name_or_dir: str | os.PathLike[str],
    *,
    batch_size: int = 128,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    model: torch.nn.Module | None = None,
    options: DataOptions | None = None,
) -> tuple[DataLoader, DataLoader]:
    """``(train, test)`` loaders (``model`` and ``options``: see :func:`load_dataset`).

    The training order depends only on ``seed`` and the epoch (``loader.sampler.set_epoch``,
    which :func:`netslim.training.train` calls), never on the global RNG, so runs repeat and
    resume exactly. Under ``torchrun`` each rank gets its own shard and ``batch_size`` is the
    *global* batch: every rank loads ``batch_size // world_size`` samples per step, and a world
    size that does not divide it is a ConfigError (raised identically on every rank). The test
    loader holds the whole test split on every rank, so every rank measures the same accuracy.
    """
    from netslim.data.sampler import ResumableSampler
    from netslim.distributed.env import rank, world_size

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    world = world_size()
    if batch_size % world:
        raise ConfigError(
            f"batch size {batch_size} is the global batch and must be a multiple of the "
            f"{world} processes (each loads batch_size / {world}); pick e.g. "
            f"{max(world, batch_size // world * world)}"
        )
    common = {"seed": seed, "root": root, "model": model, "options": options}
    train_set = load_dataset(name_or_dir, "train", limit=limit_train, **common)
    test_set = load_dataset(name_or_dir, "test", limit=limit_test, **common)
    sampler = ResumableSampler(train_set, num_replicas=world, rank=rank(), seed=seed)
    # Its own generator: creating an iterator then never draws from the global RNG.
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train_set, batch_size=batch_size // world, sampler=sampler, generator=generator
    )
    test_loader = DataLoader(test_set, batch_size=batch_size, shuffle=False)
    return train_loader, test_loader


def loader_info(loader: Any) -> DataInfo | None:
    """The :class:`DataInfo` of a loader made by :func:`make_loaders` (None for other loaders)."""
    return getattr(getattr(loader, "dataset", None), "info", None)
