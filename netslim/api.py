"""The public verbs: ``prune_`` (in place, one config object per method), ``save`` and ``load``.

``prune_`` only dispatches: each method registers a handler for its config class
(``netslim.core.registry``), so adding a method never touches this file.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from netslim.core.registry import PruneContext, handler_for
from netslim.errors import ConfigError
from netslim.io import load, save
from netslim.models.spec import build_model

# Importing a method package registers its handler; listed here so `prune_` finds every method.
_METHOD_PACKAGES = (
    "netslim.unstructured.method",
    "netslim.structural.method",
    "netslim.llm.method",
    "netslim.layers.method",
)


def _register_methods(config: Any = None) -> None:
    """Import the method package of ``config``'s own package (``netslim.X.config`` ->
    ``netslim.X.method``) or, when that is not one of them, every method package."""
    own = f"{type(config).__module__.rpartition('.')[0]}.method"
    for name in (own,) if own in _METHOD_PACKAGES else _METHOD_PACKAGES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the method: surface it
                raise


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
    _register_methods(config)
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
