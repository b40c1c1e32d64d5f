"""What every data source shares: :class:`DataInfo`, :class:`DataOptions`, the tensor dataset
that carries its info, and the class-balanced subset rule (one module the sources all import)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a data set (``input_shape`` of one sample)."""

    name: str
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    mean: float = 0.0
    std: float = 1.0
    preprocessing: str = "fixed per-data-set mean/std"


@dataclass(frozen=True)
class DataOptions:
    """Settings only some sources read: ``--val-split`` (folders, ``hf:`` sets without a
    validation split) and the column names and token length of ``hf:`` sets."""

    val_split: float | None = None
    image_column: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    max_length: int = 128


class ImageDataset(TensorDataset):
    """A ``TensorDataset(images, labels)`` that also carries its :class:`DataInfo`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DataInfo):
        super().__init__(images, labels)
        self.info = info


def subset_indices(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of ``limit`` samples drawn class by class, so small subsets stay balanced.

    Samples are ranked within their class in a seeded random order; taking the lowest ranks
    first yields a round-robin over classes. Same ``labels``, ``limit`` and ``seed`` → same set.
    """
    n = len(labels)
    if limit >= n:
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    shuffled = labels[perm]
    by_class = np.argsort(shuffled, kind="stable")
    grouped = shuffled[by_class]
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - np.searchsorted(grouped, grouped, side="left")
    chosen = np.lexsort((np.arange(n), rank))[:limit]
    return np.sort(perm[chosen])
