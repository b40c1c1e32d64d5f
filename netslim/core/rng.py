"""One snapshot of every random generator a run draws from (Python, NumPy, torch CPU and every
GPU), as JSON plus tensors, so checkpoints resume to the same next draw."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def capture_rng() -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(meta, tensors)``: meta is JSON (Python, NumPy), tensors are ``torch`` and ``cuda.<i>``."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [version, list(words), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = state
    return meta, tensors


def restore_rng(meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Undo to the :func:`capture_rng` snapshot (GPU states only when the device count matches)."""
    version, words, gauss = meta["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
