"""One call to make a run repeatable: seeds every RNG netslim (or a user script) draws from."""

from __future__ import annotations

import random

import numpy as np
import torch

from netslim.errors import ConfigError


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python's, NumPy's and torch's (CPU and all GPUs) global generators.

    ``deterministic`` also pins cuDNN to deterministic kernels and turns off its autotuner,
    which cost little for the models netslim trains. We do not call
    ``torch.use_deterministic_algorithms``: it makes some ops raise and affects the whole process.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
