"""A tiny learnable image task for fast tests: no files, no downloads, same bytes every time.

Each class has a smooth random template (a 7×7 random pattern upsampled to 28×28); a sample is
its template with random contrast, a shift of up to two pixels and Gaussian noise. A small MLP
reaches high accuracy in a few hundred steps, and the shifts give convolutions something to do.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

SEED = 1234
SIZES = {"train": 6000, "test": 1000}
NUM_CLASSES = 10
NOISE = 0.25
MAX_SHIFT = 2


@functools.lru_cache(maxsize=1)
def _templates() -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED)
    coarse = torch.rand(NUM_CLASSES, 1, 7, 7, generator=gen)
    return F.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)


@functools.lru_cache(maxsize=2)
def load_synthetic_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(float32 images N×1×28×28 in [0, 1], int64 labels N)``; the two splits are disjoint draws."""
    n = SIZES[split]
    gen = torch.Generator().manual_seed(SEED + 1 + list(SIZES).index(split))
    labels = torch.arange(n) % NUM_CLASSES
    labels = labels[torch.randperm(n, generator=gen)]
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    images = _templates()[labels] * contrast
    shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (n, 2), generator=gen)
    for dy, dx in torch.unique(shifts, dim=0).tolist():
        rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().squeeze(1)
        images[rows] = torch.roll(images[rows], shifts=(dy, dx), dims=(2, 3))
    images = (images + NOISE * torch.randn(images.shape, generator=gen)).clamp_(0.0, 1.0)
    out_images, out_labels = images.numpy(), labels.numpy().astype(np.int64)
    for array in (out_images, out_labels):
        array.flags.writeable = False
    return out_images, out_labels
