"""``copy_model``: the one way netslim copies a user's model (teachers, trials, references)."""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies modules whose plain tensor attribute is a non-leaf
    product of their parameters: ``torch.nn.utils.prune``'s ``weight = weight_orig * mask`` and
    the legacy ``torch.nn.utils.weight_norm``'s ``weight = g * v / |v|``. deepcopy refuses
    non-leaf tensors; a detached clone is what the module's next forward recomputes anyway."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)
