"""A validation split held out of the training set: the early-stopping iteration must not be
chosen on the test set (Frankle & Carbin hold out 5,000 training images for it)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from netslim.errors import ConfigError


def split_validation(
    train_loader: DataLoader, size: int, *, seed: int = 0, batch_size: int | None = None
) -> tuple[DataLoader, DataLoader]:
    """``(train, val)`` loaders: ``size`` samples drawn by ``seed`` leave the training set."""
    dataset: Dataset = train_loader.dataset
    total = len(dataset)  # type: ignore[arg-type]
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < total:
        raise ConfigError(f"validation size must be in [1, {total - 1}], got {size!r}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    batch = batch_size or train_loader.batch_size or 128
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        Subset(dataset, sorted(order[size:])), batch_size=batch, shuffle=True, generator=generator
    )
    val = DataLoader(Subset(dataset, sorted(order[:size])), batch_size=max(batch, 500))
    return train, val
