"""The public verbs: ``prune_`` (in place, one config object per method), ``save`` and ``load``.

``prune_`` only dispatches: the method table (``netslim.methods``) holds each method's handler
for its config class, so adding a method never touches this file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from netslim.core.registry import PruneContext
from netslim.errors import ConfigError
from netslim.io import load, save
from netslim.methods import handler_for
from netslim.models.spec import build_model


def prune_(
    model: nn.Module,
    config: Any,
    *,
    example_inputs: Any = None,
    train_loader: Any = None,
    test_loader: Any = None,
    **extras: Any,
) -> dict[str, Any]:
    """Prune ``model`` in place as ``config`` says and return a summary of what changed.

    ``example_inputs`` (a tensor or tuple) is needed by methods that trace the model (structural
    pruning, MACs targets); data loaders by criteria or schedules that use data.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"prune_ expects an nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    elif example_inputs is not None and not isinstance(example_inputs, dict):
        example_inputs = tuple(example_inputs)  # a dict holds keyword inputs (Hugging Face)
    context = PruneContext(
        example_inputs=example_inputs,
        train_loader=train_loader,
        test_loader=test_loader,
        extras=extras,
    )
    return handler_for(config)(model, config, context)


__all__ = ["build_model", "load", "prune_", "save"]
