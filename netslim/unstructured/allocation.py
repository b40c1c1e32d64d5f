"""Decide which weights to drop: scores + scope → one bool mask per target (True = keep).

Nothing here mutates the model. Masks are monotone: entries already masked get score -inf, so
they are the first counted towards the ratio and stay masked whatever the new scores say. The
number pruned is ``round(ratio * n)`` (Python rounding, as ``torch.nn.utils.prune``), so global
L1 masks equal ``prune.global_unstructured(..., prune.L1Unstructured, amount=ratio)``.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import torch
from torch import Tensor, nn

from netslim.core.masks import get_mask
from netslim.core.select import fraction_count, lowest_k
from netslim.errors import ConfigError
from netslim.unstructured.config import Unstructured
from netslim.unstructured.criteria import get_criterion
from netslim.unstructured.nm import nm_mask
from netslim.unstructured.targets import Target, find_targets


def _scores(
    model: nn.Module, targets: list[Target], config: Unstructured, calibration: Any
) -> dict[str, Tensor]:
    criterion = get_criterion(config.criterion, seed=config.seed)
    criterion.prepare(model, calibration)
    out = {}
    with torch.no_grad():
        for t in targets:
            weight = getattr(t.module, t.name).detach()
            s = criterion.scores(weight, module=t.module, name=t.key)
            if tuple(s.shape) != tuple(weight.shape):
                raise ConfigError(
                    f"criterion {config.criterion!r} returned shape {tuple(s.shape)} for {t.key}"
                )
            s = s.float() if not s.is_floating_point() else s
            existing = get_mask(t.module, t.name)
            if existing is not None:
                s = s.masked_fill(existing.to(s.device) == 0, float("-inf"))
            out[t.key] = s
    return out


def _global(scores: dict[str, Tensor], ratio: float) -> dict[str, Tensor]:
    dtype = reduce(torch.promote_types, (s.dtype for s in scores.values()))
    device = next(iter(scores.values())).device
    flat = torch.cat([s.flatten().to(device=device, dtype=dtype) for s in scores.values()])
    drop = lowest_k(flat, fraction_count(ratio, flat.numel()))
    masks, start = {}, 0
    for key, s in scores.items():
        masks[key] = ~drop[start : start + s.numel()].view(s.shape).to(s.device)
        start += s.numel()
    return masks


def _per_row(scores: Tensor, ratio: float) -> Tensor:
    if scores.dim() < 2:
        return lowest_k(scores, fraction_count(ratio, scores.numel()))
    rows = scores.reshape(scores.shape[0], -1)
    return lowest_k(rows, fraction_count(ratio, rows.shape[1]), dim=1).view_as(scores)


def check_nm_fit(model: nn.Module, config: Unstructured) -> list[Any]:
    """The targets of ``config``; with N:M, every layer whose input width M does not divide is
    named in one error (all at once, before any work), with how to leave them out."""
    targets = find_targets(
        model,
        ignore=config.ignore,
        include_classifier=config.include_classifier,
        include_bias=config.include_bias,
    )
    if config.nm is None:
        return targets
    n, m = config.nm
    targets = [t for t in targets if t.name != "bias"]  # N:M is defined for weight matrices
    misfits = [
        (t, getattr(t.module, t.name).shape[1])
        for t in targets
        if getattr(t.module, t.name).dim() < 2 or getattr(t.module, t.name).shape[1] % m
    ]
    if misfits:
        names = [t.module_name for t, _ in misfits]
        widths = ", ".join(f"{t.key} ({width})" for t, width in misfits)
        raise ConfigError(
            f"{n}:{m} sparsity needs input widths divisible by {m}; these are not: {widths}. "
            f"Leave them out: --ignore {' '.join(names)} (Python: ignore={tuple(names)!r})"
        )
    return targets


def compute_masks(
    model: nn.Module, config: Unstructured, calibration: Any = None
) -> dict[str, Tensor]:
    """Keep-masks keyed ``"module.path.weight"`` for every target of ``config`` (see module doc).
    ``calibration`` (:class:`netslim.importance.Calibration`) feeds data-driven criteria."""
    if not isinstance(config, Unstructured):
        raise ConfigError(
            f"compute_masks expects an Unstructured config, got {type(config).__name__}"
        )
    targets = check_nm_fit(model, config)
    scores = _scores(model, targets, config, calibration)
    if config.nm is not None:
        masks = {key: nm_mask(s, *config.nm) for key, s in scores.items()}
    elif config.scope == "global":
        masks = _global(scores, config.ratio)
    elif config.scope == "row":  # per output row (Wanda's comparison group)
        masks = {key: ~_per_row(s, config.ratio) for key, s in scores.items()}
    else:
        masks = {
            key: ~lowest_k(s, fraction_count(config.ratio, s.numel())) for key, s in scores.items()
        }
    for t in targets:  # monotone: already-masked entries never come back
        existing = get_mask(t.module, t.name)
        if existing is not None:
            masks[t.key] &= existing.to(masks[t.key].device) != 0
    return masks
