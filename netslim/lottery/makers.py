"""Mask makers: where IMP's masks come from, pluggable so a ticket can be unstructured or channels.

A maker sees a weight tensor as a set of *units* (single weights, or output channels = rows) and
only has to say how to score units, read a mask as units, and expand units back to a full weight
mask. Everything else (pruning a fraction of the remaining units, globally or per layer; a random
mask with the same per-layer unit counts) is shared here and never touches the model.

Every layer keeps at least one unit, so no round can cut the network in two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from torch import Tensor

from netslim.core.config import choice
from netslim.unstructured.allocation import lowest_k

Masks = dict[str, Tensor]


class MaskMaker:
    """Base class. ``name`` is how ``Lottery(masks=...)`` selects it. ``removes_outputs``: a unit
    is an output of the layer, so pruning the classifier would delete classes (it stays dense)."""

    name: ClassVar[str] = ""
    removes_outputs: ClassVar[bool] = False

    def unit_scores(self, weight: Tensor) -> Tensor:
        """Importance per unit (higher = keep), comparable across layers for global ranking."""
        raise NotImplementedError

    def units(self, mask: Tensor) -> Tensor:
        """Bool keep-flags per unit of a full keep-mask."""
        raise NotImplementedError

    def expand(self, units: Tensor, shape: torch.Size) -> Tensor:
        """The full bool keep-mask of ``shape`` that keeps exactly the flagged units."""
        raise NotImplementedError

    # shared logic -------------------------------------------------------------------------

    def kept_units(self, masks: Mapping[str, Tensor]) -> dict[str, int]:
        return {key: int(self.units(mask).sum()) for key, mask in masks.items()}

    def prune(
        self,
        weights: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        rate: float,
        scope: str,
    ) -> Masks:
        """Drop ``round(rate * kept)`` of the kept units (over all tensors, or per tensor)."""
        kept = self.kept_units(masks)
        if scope == "global":
            return self.select(weights, masks, round(rate * sum(kept.values())))
        return self.select(weights, masks, {k: round(rate * n) for k, n in kept.items()})

    def select(
        self,
        weights: Mapping[str, Tensor],
        masks: Mapping[str, Tensor],
        drop: int | Mapping[str, int],
    ) -> Masks:
        """New masks dropping ``drop`` more units: an int ranks all tensors together, a mapping
        gives a count per tensor. Dropped units stay dropped (masks only shrink)."""
        scores = {}
        for key, mask in masks.items():
            s = self.unit_scores(weights[key].detach()).float()
            alive = self.units(mask).to(s.device)
            s = s.masked_fill(~alive, float("-inf"))
            if bool(alive.any()):  # the best unit of each tensor is never dropped
                s.view(-1)[int(s.argmax())] = float("inf")
            scores[key] = s
        dead = {key: int((~self.units(masks[key])).sum()) for key in masks}
        if isinstance(drop, int):
            flat = torch.cat([s.flatten() for s in scores.values()])
            gone = lowest_k(flat, min(sum(dead.values()) + drop, _droppable(scores)))
            out, start = {}, 0
            for key, s in scores.items():
                units = ~gone[start : start + s.numel()].view(s.shape)
                out[key] = self.expand(units, masks[key].shape)
                start += s.numel()
            return out
        out = {}
        for key, s in scores.items():
            k = min(dead[key] + int(drop.get(key, 0)), _droppable({key: s}))
            out[key] = self.expand(~lowest_k(s, k), masks[key].shape)
        return out

    def random_like(self, masks: Mapping[str, Tensor], generator: torch.Generator) -> Masks:
        """Uniformly random masks keeping, per tensor, as many units as ``masks`` keeps."""
        out = {}
        for key, mask in masks.items():
            units = self.units(mask)
            n_keep = int(units.sum())
            order = torch.randperm(units.numel(), generator=generator)
            flat = torch.zeros(units.numel(), dtype=torch.bool)
            flat[order[:n_keep]] = True
            out[key] = self.expand(flat.view(units.shape).to(mask.device), mask.shape)
        return out


def _droppable(scores: Mapping[str, Tensor]) -> int:
    """Units that may be dropped: all but the protected best one per tensor."""
    return sum(s.numel() - int(torch.isinf(s).logical_and(s > 0).sum()) for s in scores.values())


class MagnitudeMasks(MaskMaker):
    """Single weights by |w|, the criterion of Frankle & Carbin (2019) and Han et al. (2015)."""

    name = "magnitude"

    def unit_scores(self, weight: Tensor) -> Tensor:
        return weight.abs()

    def units(self, mask: Tensor) -> Tensor:
        return mask != 0

    def expand(self, units: Tensor, shape: torch.Size) -> Tensor:
        return units.reshape(shape).clone()


class ChannelMasks(MaskMaker):
    """Whole output channels (rows of the weight) by their L1 or L2 norm (Li et al., ICLR 2017,
    "Pruning Filters for Efficient ConvNets"). Scores are per-entry means (|w| mean, or root
    mean square), so rows of layers with different fan-in compare in a global ranking. Only the
    weight is masked: a pruned channel still adds its bias, which the physical structural engine
    folds away when it removes the channel."""

    removes_outputs = True

    def __init__(self, p: int = 2):
        self.p = p
        self.name = f"channel-l{p}"  # type: ignore[misc]

    def unit_scores(self, weight: Tensor) -> Tensor:
        rows = weight.reshape(weight.shape[0], -1).float()
        return rows.abs().mean(dim=1) if self.p == 1 else rows.pow(2).mean(dim=1).sqrt()

    def units(self, mask: Tensor) -> Tensor:
        return (mask != 0).reshape(mask.shape[0], -1).any(dim=1)

    def expand(self, units: Tensor, shape: torch.Size) -> Tensor:
        view = units.reshape(-1, *([1] * (len(shape) - 1)))
        return view.expand(shape).clone()


_MAKERS: dict[str, Callable[[], MaskMaker]] = {
    "magnitude": MagnitudeMasks,
    "channel-l1": lambda: ChannelMasks(1),
    "channel-l2": lambda: ChannelMasks(2),
}


def register_maker(name: str, factory: Callable[[], MaskMaker]) -> None:
    """Extension point: make ``Lottery(masks=name)`` use ``factory()``."""
    _MAKERS[name] = factory


def available_makers() -> list[str]:
    return sorted(_MAKERS)


def get_maker(name: str) -> MaskMaker:
    choice("mask maker", name, available_makers())
    return _MAKERS[name]()
