"""Torch-Pruning (DepGraph) driven the way its own examples do, for side-by-side runs.

Kept in one place so every bench compares against the same, documented configuration:
``BasePruner`` with ``GroupMagnitudeImportance(p=2)``, the classifier ignored.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def classifier_layers(model: nn.Module, num_outputs: int) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_outputs)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_outputs)
    ]


def tp_prune(
    model: nn.Module,
    example: torch.Tensor,
    ratio: float,
    *,
    ignored: list[nn.Module],
    importance: str = "l2",
    round_to: int | None = None,
    extra: dict[str, Any] | None = None,
) -> nn.Module:
    """Prune ``model`` in place with Torch-Pruning at a uniform channel ratio."""
    import torch_pruning as tp

    imp = {
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "random": lambda: tp.importance.RandomImportance(),
    }[importance]()
    pruner = tp.pruner.BasePruner(
        model,
        (example,),
        importance=imp,
        pruning_ratio=ratio,
        ignored_layers=ignored,
        round_to=round_to,
        **(extra or {}),
    )
    pruner.step()
    return model


def tp_macs(model: nn.Module, example: torch.Tensor) -> int:
    from netslim.measure import count_macs

    return count_macs(model, (example,))


def tp_prune_to_macs(
    model: nn.Module,
    example: torch.Tensor,
    keep_fraction: float,
    *,
    num_outputs: int,
    **kwargs: Any,
) -> tuple[nn.Module, float]:
    """Search Torch-Pruning's uniform ratio so the pruned model keeps ``keep_fraction`` of MACs."""
    base = tp_macs(model, example)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(10):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        tp_prune(trial, example, mid, ignored=classifier_layers(trial, num_outputs), **kwargs)
        frac = tp_macs(trial, example) / base
        if best is None or abs(frac - keep_fraction) < abs(best[1] - keep_fraction):
            best = (trial, frac)
        lo, hi = (mid, hi) if frac > keep_fraction else (lo, mid)
    assert best is not None
    return best
