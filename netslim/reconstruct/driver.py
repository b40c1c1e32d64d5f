"""Reconstruct a pruned model against its dense original, layer after layer, then re-estimate
BatchNorm statistics: what ``Channels(reconstruct=True)`` and ``Unstructured(reconstruct=True)``
run after choosing what to prune."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from netslim.errors import ConfigError
from netslim.importance.calibration import Calibration, iter_batches
from netslim.reconstruct.layers import forward_order, reestimate_bn, refit_layer

Target = tuple[Tensor | None, Tensor | None]
"""``(kept output indices or None, weight mask or None)`` of one layer to refit."""


def calibration_batches(model: nn.Module, calibration: Calibration | None) -> list[Any]:
    """The calibration batches as a list (every layer's solve reads the same ones)."""
    if calibration is None:
        raise ConfigError(
            "reconstruct=True refits layers on calibration data: pass prune_(model, config, "
            "train_loader=loader) (labels are not used), or --data on the command line"
        )
    return list(iter_batches(model, calibration))


def reconstruct(
    model: nn.Module, dense: nn.Module, targets: Mapping[str, Target], batches: Sequence[Any]
) -> dict[str, Any]:
    """Refit the ``targets`` of ``model`` in forward order, then re-estimate BatchNorm.

    Returns ``{"layers": {name: {"error_before", "error_after"}}, "batchnorm": count}`` with the
    relative squared output error on the calibration data (0 = the dense layer's outputs).
    """
    modes = {m: m.training for m in [*model.modules(), *dense.modules()]}
    model.eval()
    dense.eval()
    layers: dict[str, dict[str, float]] = {}
    try:
        for name in forward_order(model, list(targets), batches[0]):
            out_index, keep = targets[name]
            fit = refit_layer(model, dense, name, batches, out_index=out_index, keep=keep)
            layers[name] = {"error_before": fit.before, "error_after": fit.after}
    finally:
        for m, mode in modes.items():
            m.train(mode)
    bn = reestimate_bn(model, batches)
    return {"layers": layers, "batchnorm": bn}
