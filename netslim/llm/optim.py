"""The one Adam of the LLM training steps (block reconstruction and distillation recovery),
and the precision of their forward passes.

PyTorch's fused Adam updates each tensor in one vectorised kernel: on CPU about 5x faster than
the per-tensor loop (``foreach=False``: a dozen elementwise ops per tensor), and unlike the
multi-tensor path (``foreach=True``) it allocates no temporaries for all parameters at once, so
the peak memory of a step stays that of the loop. The loop remains the fallback for parameters
the fused kernel does not take.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

FUSED_DEVICES = ("cpu", "cuda")
TRAIN_DTYPES = ("float32", "bfloat16")
"""The precisions of the training steps' forward passes (``LLMPrune.train_dtype``)."""


def forward_precision(train_dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context one training step's forward pass runs in: nothing for ``float32``; for
    ``bfloat16``, autocast, so matrix products run in bf16 while weights, their gradients and
    the optimizer state stay float32. Enter it per step, around the forward only: autocast caches
    each weight's bf16 copy for as long as the context is open, and a context held across
    optimizer steps would keep serving the first step's weights (the fit then diverges)."""
    if train_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def adam(params: list[nn.Parameter], lr: float, *, weight_decay: float | None = None):
    """``Adam`` (``weight_decay=None``) or ``AdamW`` (decoupled decay), fused when it can be."""
    fused = bool(params) and all(
        p.device.type in FUSED_DEVICES and p.dtype.is_floating_point for p in params
    )
    kind = dict(fused=True) if fused else dict(foreach=False)
    if weight_decay is None:
        return torch.optim.Adam(params, lr=lr, **kind)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kind)
