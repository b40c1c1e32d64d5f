"""Whole residual blocks as choices of the latency plan, beside every group's width.

Per-op time that no width removes (each conv, norm and activation call costs a fixed time) sets
much of a small model's time at batch 1: MobileNetV2's width plans there bought 2x in speed for
5x in MACs. Only removing the op removes its time, so under ``Channels(blocks=True)`` the
knapsack may also remove a residual block whole (``netslim.core.blocks.find_blocks``: a block
in a container whose output is its input plus a branch): it saves the block's layers' time and
the fixed time of its other ops (measured: the table times the model with its blocks out), and
loses ``weight`` times its inner groups' kept value. A removed block becomes ``nn.Identity`` (its
output is its input), so module names and the plan's group ids stay valid around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from netslim.core.blocks import find_blocks
from netslim.errors import PruningError
from netslim.structural.latency_table import LatencyTable

BLOCK_WEIGHT = 0.1
"""The share of its inner groups' whole value that removing a block loses (the identity path
keeps the rest). Importance is normalised per group, so at weight 1 a block of 96 inner channels
weighs like 96 channels of any other group, and the plans cut narrow instead. On resnet56 /
Fashion-MNIST (bench/_latency_blocks_accuracy.py, run 09:49-10:07 of 2026-12-03 at 8c57992,
seeds 0-2, batch 16, one solve, no reconstruction, one epoch of fine-tuning): at 2x the widths
alone kept 70.94%, weight 1 73.04% (3 blocks out), weight 0.1 78.97% (12 of 25 out); at 3x
70.15%, 68.90% and 77.01% (17 out); weight 0.1 ahead of the widths on every seed at both
targets. Not tuned further (the same seeds as the bench's accuracy part)."""


@dataclass(frozen=True)
class BlockOption:
    """A residual block the plan may remove whole: the indices of the table's layers inside it,
    the groups that live only inside it (removed with it, their kept value lost) and the time
    of its ops that are not layers (norms, activations, its add)."""

    name: str
    layers: tuple[int, ...]
    groups: tuple[str, ...]
    fixed_ms: float = 0.0
    weight: float = BLOCK_WEIGHT  # the share of its groups' kept value removing it loses


def block_options(
    table: LatencyTable,
    names: Sequence[str],
    weight: float = BLOCK_WEIGHT,
) -> tuple[BlockOption, ...]:
    """An option per block name that has table layers and a group of its own: its layers (by
    module name), the groups only those layers touch, and the fixed time of its other ops (norms,
    activations, its add) by its count of layers: measured per layer when the table bypassed
    the blocks (``build_table(blocks=...)``), else a share of the fixed remainder."""
    touch: dict[str, set[int]] = {}
    for i, layer in enumerate(table.layers):
        for g in layer.groups:
            touch.setdefault(g, set()).add(i)
    options = []
    for name in names:
        inside = table.layers_inside((name,))
        groups = tuple(g for g, layers in touch.items() if layers <= inside)
        if inside and groups:
            per_layer = table.block_fixed_ms
            if per_layer is None:  # never below 0: see ``fit_block_fixed``
                per_layer = max(table.remainder_fixed, 0.0) / len(table.layers)
            share = per_layer * len(inside)
            options.append(BlockOption(name, tuple(sorted(inside)), groups, share, weight))
    return tuple(options)


def removable_blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the blocks of ``model`` that can be bypassed (residual, shape-preserving)."""
    return [b.name for b in find_blocks(model, example_inputs)]


def check_bypass(model: nn.Module, names: Sequence[str]) -> None:
    """Fail before anything changes when a block to bypass does not exist."""
    for name in names:
        if not name:
            raise PruningError("the whole model cannot be bypassed")
        try:
            model.get_submodule(name)
        except AttributeError:
            raise PruningError("no such block to bypass in this model", name) from None


def bypass(model: nn.Module, names: Sequence[str]) -> None:
    """Replace each named block by ``nn.Identity`` (checked first: all or nothing)."""
    check_bypass(model, names)
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent)
        if isinstance(holder, (nn.Sequential, nn.ModuleList)) and child.isdigit():
            holder[int(child)] = nn.Identity()
        else:
            setattr(holder, child, nn.Identity())
