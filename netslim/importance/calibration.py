"""A calibration set: batches from a loader, how to run the model on one, and the loss.

Batches may be ``(inputs, labels)`` pairs, a dict of keyword inputs (Hugging Face style) or a
bare tensor. The default loss is cross-entropy on ``(inputs, labels)`` pairs; models without
labels need ``loss=callable(model, batch) -> scalar``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from netslim.core.batches import Loss, device_of, logits_of, to_device
from netslim.errors import ConfigError, DataError


@dataclass
class Calibration:
    """``loader``: any iterable of batches; ``batches``: how many to use at most."""

    loader: Iterable[Any]
    loss: Loss | None = None
    batches: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.batches, bool) or not isinstance(self.batches, int) or self.batches < 1:
            raise ConfigError(f"calibration batches must be a positive int, got {self.batches!r}")
        if self.loss is not None and not callable(self.loss):
            raise ConfigError(
                f"loss must be callable(model, batch), got {type(self.loss).__name__}"
            )


def calibration_from(ctx: Any, batches: int) -> Calibration | None:
    """``prune_(..., train_loader=loader, loss=fn)`` (or ``calibration=Calibration(...)``) of a
    :class:`netslim.core.registry.PruneContext` as a calibration set; None without data."""
    loader = ctx.extras.get("calibration", ctx.train_loader)
    if isinstance(loader, Calibration) or loader is None:
        return loader
    return Calibration(loader, loss=ctx.extras.get("loss"), batches=batches)


def require(calibration: Calibration | None, criterion: str) -> Calibration:
    """The calibration set, or a ConfigError naming the fix."""
    if calibration is None:
        raise ConfigError(
            f"criterion {criterion!r} scores with data: pass a calibration loader, e.g. "
            f"prune_(model, config, train_loader=loader) (optionally loss=fn(model, batch)), "
            f"or --data on the command line"
        )
    return calibration


def iter_batches(model: nn.Module, calibration: Calibration) -> Iterator[Any]:
    """Up to ``calibration.batches`` batches on the model's device; DataError if none come."""
    device = device_of(model)
    count = 0
    for batch in calibration.loader:
        yield to_device(batch, device)
        count += 1
        if count >= calibration.batches:
            break
    if count == 0:
        raise DataError("the calibration loader yielded no batches: give it at least one sample")


def _tensors(obj: Any) -> Iterator[Tensor]:
    """The tensors in ``obj``, in order through tuples, lists and dicts."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (dict, list, tuple)):
        for item in obj.values() if isinstance(obj, dict) else obj:
            yield from _tensors(item)


def batch_samples(batch: Any) -> int:
    """How many samples a batch (or a model's example inputs) holds: the leading size of its
    first tensor with a leading dim (a pair's inputs come before its labels); 1 when none."""
    return next((int(t.shape[0]) for t in _tensors(batch) if t.dim() > 0), 1)


def forward(model: nn.Module, batch: Any) -> Any:
    """Run the model on the inputs of ``batch`` (labels, if any, are not passed)."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (list, tuple)):
        return model(batch[0])
    return model(batch)


def loss_of(model: nn.Module, batch: Any, calibration: Calibration, criterion: str) -> Tensor:
    if calibration.loss is not None:
        return calibration.loss(model, batch)
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return F.cross_entropy(logits_of(forward(model, batch)), batch[1])
    raise ConfigError(
        f"criterion {criterion!r} needs a loss: batches are not (inputs, labels) pairs, so pass "
        "loss=fn(model, batch) -> scalar"
    )
