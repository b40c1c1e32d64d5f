"""Training with per-weight keep-masks held fixed (block reconstruction and distillation).

Pruned weights must stay exactly zero while the survivors train, so a sparsity pattern (2:4
included) never changes: the gradient is masked before the optimizer sees it, which keeps
Adam's moments there at zero, and the weight is re-zeroed after the step, since an update that
does not come from the gradient alone (Adafactor's, weight decay) could still move it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

Masks = Mapping[nn.Parameter, Tensor]
"""Parameter → keep-mask of the same shape (True = may change)."""


def mask_grad(param: nn.Parameter, keep: Tensor) -> None:
    """Zero the gradient of the pruned entries of ``param`` (no-op without a gradient)."""
    if param.grad is not None:
        param.grad.mul_(keep)


def mask_grads(masks: Masks) -> None:
    for param, keep in masks.items():
        mask_grad(param, keep)


def reapply(masks: Masks) -> None:
    """Re-zero the pruned entries after an optimizer step."""
    with torch.no_grad():
        for param, keep in masks.items():
            param.mul_(keep)
