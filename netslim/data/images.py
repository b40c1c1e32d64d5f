"""Datasets of decoded images: preprocessed once into memory when they fit, else per item.

Preprocessing here is deterministic (resize, crop, normalise; no augmentation), so decoding each
image once and keeping the tensor gives every epoch exactly the same inputs, without paying the
decode cost per epoch. Sets too large for :data:`PRELOAD_BYTES` decode per item instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from netslim.data.base import DataInfo, ImageDataset
from netslim.data.preprocess import ImagePreprocess

PRELOAD_BYTES = 1 << 30


class LazyImageDataset(Dataset):
    """``(transform(image i), label i)``, decoded on access; carries its :class:`DataInfo`."""

    def __init__(
        self,
        get_image: Callable[[int], Any],
        labels: np.ndarray,
        transform: Callable[[Any], Tensor],
        info: DataInfo,
    ):
        self.get_image, self.transform, self.info = get_image, transform, info
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.get_image(index)), self.labels[index]


def image_dataset(
    get_image: Callable[[int], Any],
    labels: np.ndarray,
    preprocess: ImagePreprocess,
    info: DataInfo,
) -> Dataset:
    """An :class:`ImageDataset` of preprocessed tensors, or a lazy one when it would not fit."""
    count = len(labels)
    if count * math.prod(preprocess.input_shape) * 4 > PRELOAD_BYTES:
        return LazyImageDataset(get_image, labels, preprocess.transform, info)
    images = torch.empty((count, *preprocess.input_shape))
    for i in range(count):
        images[i] = preprocess.transform(get_image(i))
    return ImageDataset(images, torch.as_tensor(np.asarray(labels), dtype=torch.int64), info)


def open_image(path: str) -> Any:
    """A decoded PIL image (its file closed)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image
