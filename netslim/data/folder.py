"""Image-folder trees: ``DIR/train/<class>/*.png`` + ``DIR/val/<class>/...``, or ``DIR/<class>/...``
split by a ratio.

Class indices follow the sorted class-folder names (as ``torchvision.datasets.ImageFolder``), so
the same tree always maps to the same labels. The tree is only listed here; decoding and
preprocessing (which depend on the model) live in :mod:`netslim.data.preprocess`.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netslim.errors import ConfigError, DataError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
VAL_NAMES = ("val", "validation", "test")
DEFAULT_VAL_SPLIT = 0.2
SPLIT_SEED = 0  # fixed: the held-out images do not change with --seed, so scores compare
_PROBE = 64  # images opened to learn the tree's usual mode and size


@dataclass(frozen=True)
class FolderTree:
    """A listed image-folder tree: files and labels per split, plus what a sample looks like."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, tuple[str, ...]]  # split ("train" / "test") -> image paths
    labels: dict[str, np.ndarray]  # split -> int64 labels
    layout: str  # "train/val" or "split 0.2"
    channels: int  # 1 for greyscale trees, else 3
    size: tuple[int, int]  # the most common (height, width)


def _images(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def _class_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def val_dir(root: Path) -> Path | None:
    return next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)


def looks_like_folder(root: Path) -> bool:
    """A ``train/`` folder of class folders, or class folders holding images directly."""
    if (root / "train").is_dir():
        return True
    return any(_images(d) for d in _class_dirs(root)[:3])


def _scan(directory: Path, what: str) -> dict[str, list[Path]]:
    classes = {d.name: _images(d) for d in _class_dirs(directory)}
    classes = {name: files for name, files in classes.items() if files}
    if not classes:
        raise DataError(
            f"{what} {directory} holds no class folders with images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return classes


def holdout(labels: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` indices holding out ``ratio`` of every class (at least one image
    of a class with two or more), chosen with a fixed seed."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = rng.permutation(members)
        n = len(members)
        held = min(n - 1, max(1, round(ratio * n))) if n > 1 else 0
        val.append(order[:held])
        train.append(order[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _split(per_class: dict[str, list[Path]], ratio: float) -> tuple[dict, dict]:
    """Hold out ``ratio`` of every class (see :func:`holdout`)."""
    train, val = {}, {}
    for name, files in per_class.items():
        kept, held = holdout(np.zeros(len(files), dtype=np.int64), ratio)
        train[name] = [files[i] for i in kept]
        val[name] = [files[i] for i in held]
    return train, val


def _flatten(per_class: dict[str, list[Path]], index: dict[str, int]) -> tuple[tuple, np.ndarray]:
    pairs = [(str(f), index[name]) for name, files in per_class.items() for f in files]
    return tuple(p for p, _ in pairs), np.array([y for _, y in pairs], dtype=np.int64)


def _probe(files: tuple[str, ...]) -> tuple[int, tuple[int, int]]:
    from PIL import Image

    step = max(1, len(files) // _PROBE)
    modes, sizes = Counter(), Counter()
    for path in files[::step][:_PROBE]:
        try:
            with Image.open(path) as image:
                modes[1 if image.mode in ("L", "1", "I", "I;16", "F") else 3] += 1
                sizes[(image.height, image.width)] += 1
        except OSError as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from None
    return modes.most_common(1)[0][0], sizes.most_common(1)[0][0]


def check_val_split(value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1
    ):
        raise ConfigError(f"--val-split must be a fraction in (0, 1), got {value!r}")


def scan_folder(root: str | Path, val_split: float | None = None) -> FolderTree:
    """List ``root`` (cached per directory state); ``val_split`` only for a tree without val/."""
    check_val_split(val_split)
    root = Path(root)
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in [root, *_class_dirs(root)])
    return _scan_cached(str(root.resolve()), val_split, stamp)


@functools.lru_cache(maxsize=4)
def _scan_cached(root_text: str, val_split: float | None, stamp: tuple) -> FolderTree:
    root = Path(root_text)
    if (root / "train").is_dir():
        held = val_dir(root)
        if held is None:
            if val_split is None:
                raise DataError(
                    f"{root}/train has no sibling {'/, '.join(VAL_NAMES)}/ folder; add one or "
                    "pass --val-split FRACTION to hold out part of train/"
                )
            train, val = _split(_scan(root / "train", "folder"), val_split)
            layout = f"train/ split {val_split:g}"
        else:
            if val_split is not None:
                raise ConfigError(
                    f"--val-split applies to a folder without a validation split; {root} has "
                    f"{held.name}/"
                )
            train, val = _scan(root / "train", "folder"), _scan(held, "folder")
            layout = f"train/ + {held.name}/"
    else:
        ratio = DEFAULT_VAL_SPLIT if val_split is None else val_split
        train, val = _split(_scan(root, "folder"), ratio)
        layout = f"split {ratio:g}"
    unknown = sorted(set(val) - set(train))
    if unknown:
        raise DataError(f"{root}: validation classes {unknown[:5]} have no training folder")
    classes = tuple(sorted(train))
    index = {name: i for i, name in enumerate(classes)}
    train_files, train_labels = _flatten(train, index)
    val_files, val_labels = _flatten(val, index)
    if not len(val_files):
        raise DataError(f"{root}: the validation split is empty")
    channels, size = _probe(train_files)
    return FolderTree(
        root=root,
        classes=classes,
        files={"train": train_files, "test": val_files},
        labels={"train": train_labels, "test": val_labels},
        layout=layout,
        channels=channels,
        size=size,
    )


def folder_preprocess(tree: FolderTree, model: Any) -> Any:
    """The model's preprocessing for this tree (statistics from its training images)."""
    from netslim.data.images import open_image
    from netslim.data.preprocess import image_preprocess

    def sample(n: int) -> list[Any]:
        files = tree.files["train"]
        return [open_image(p) for p in files[:: max(1, len(files) // n)][:n]]

    return image_preprocess(model, tree.channels, tree.size, sample)


def load_folder_split(
    root: Path,
    split: str,
    options: Any,
    model: Any,
    *,
    limit: int | None = None,
    seed: int = 0,
) -> Any:
    """One split (``"test"`` is the validation split) preprocessed for ``model``."""
    from netslim.data.base import DataInfo, subset_indices
    from netslim.data.images import image_dataset, open_image

    tree = scan_folder(root, options.val_split)
    preprocess = folder_preprocess(tree, model)
    labels = tree.labels[split]
    keep = subset_indices(labels, limit, seed) if limit is not None else np.arange(len(labels))
    files = [tree.files[split][i] for i in keep]
    info = DataInfo(
        str(root),
        input_shape=preprocess.input_shape,
        num_classes=len(tree.classes),
        preprocessing=f"image folder ({tree.layout}); {preprocess.source}",
    )
    return image_dataset(lambda i: open_image(files[i]), labels[keep], preprocess, info)
