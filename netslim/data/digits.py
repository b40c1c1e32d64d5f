"""scikit-learn's bundled 8×8 digits, upsampled to 1×28×28 so every zoo model accepts them.

The data ship inside scikit-learn (no download). The train/test split is fixed (stratified,
80/20, its own seed) so test accuracy is comparable across runs whatever seed a run uses.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from netslim.errors import DataError

SPLIT_SEED = 20240601
TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "the 'digits' data set needs scikit-learn: pip install scikit-learn"
        ) from None
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).numpy()
    labels = bunch.target.astype(np.int64)
    for array in (images, labels):
        array.flags.writeable = False
    return images, labels


@functools.lru_cache(maxsize=1)
def _test_mask() -> np.ndarray:
    """Per class, a fixed random 20% goes to the test split."""
    _, labels = _all_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        mask[rng.permutation(members)[: round(TEST_FRACTION * len(members))]] = True
    mask.flags.writeable = False
    return mask


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(float32 images N×1×28×28 in [0, 1], int64 labels N)`` of the fixed split."""
    images, labels = _all_digits()
    keep = _test_mask() if split == "test" else ~_test_mask()
    return images[keep], labels[keep]
