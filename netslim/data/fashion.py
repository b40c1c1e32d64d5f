"""MNIST-layout IDX directories: Fashion-MNIST from the Debian package, or any copy of it.

Decoded arrays are cached per file for the life of the process: the full training set takes
~0.4 s to gunzip, and experiments reload it many times (train, fine-tune, evaluate).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from netslim.data.idx import read_idx
from netslim.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the files."""

_PREFIX = {"train": "train", "test": "t10k"}
_INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, "
    "or pass a directory holding the MNIST-style IDX files"
)


def idx_files(root: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) files of ``split`` in ``root``, gzipped or not."""
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        stem = f"{_PREFIX[split]}-{kind}"
        candidates = [root / f"{stem}.gz", root / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"{root}: missing {stem}.gz (or {stem}); {_INSTALL_HINT}")
        found.append(path)
    return found[0], found[1]


def load_idx_split(root: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read-only ``(uint8 images N×H×W, int64 labels N)`` of one split of an IDX directory."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found; {_INSTALL_HINT}")
    images_path, labels_path = idx_files(root, split)
    # The stamp makes a file replaced on disk miss the cache instead of serving stale data.
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (images_path, labels_path))
    return _load_pair(str(images_path.resolve()), str(labels_path.resolve()), stamp)


@functools.lru_cache(maxsize=8)
def _load_pair(images_path: str, labels_path: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images N×H×W, got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: expected {len(images)} labels to match {images_path}, got shape {labels.shape}"
        )
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def clear_cache() -> None:
    """Forget decoded files (for tests, or after the files on disk changed)."""
    _load_pair.cache_clear()
