"""Batches, for every trainer, scorer and timer: where a model lives, how a batch gets there,
and the loss users pass (batches may be tensors, ``(inputs, labels)`` pairs or dicts of keyword
inputs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from netslim.errors import ConfigError

Loss = Callable[[nn.Module, Any], Tensor]
"""A user's loss, ``fn(model, batch) -> scalar``: ``prune_(..., loss=fn)``, ``Calibration``,
``train(loss=fn)``."""


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, else its first buffer, else the CPU."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor in it moved to ``device``, through tuples (named ones too),
    lists and dicts; anything else is returned as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(to_device(v, device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def batch_of_two(x: Any) -> Any:
    """``x`` with a batch of one repeated to two rows, anything else as it is.

    ``torch.export`` specialises a dimension traced at size 1 (its 0/1 rule): a program traced
    on a batch of one then refuses every other batch size. Traced on two rows, the batch stays
    dynamic."""
    if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == 1:
        return x.expand(2, *x.shape[1:]).clone()
    return x


def logits_of(output: Any) -> Tensor:
    """Classifier logits from a plain tensor, an object with ``.logits`` (Hugging Face) or a
    tuple: what netslim's training (cross-entropy) and accuracy read."""
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ConfigError(
        f"a model output of type {type(output).__name__} holds no classifier logits, which "
        "netslim's training (cross-entropy) and accuracy read: train such a model in its own "
        "loop (netslim.integrations) or with loss=fn(model, batch) in Python, or prune it "
        "without data (--data none)"
    )
