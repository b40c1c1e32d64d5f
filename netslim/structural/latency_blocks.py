"""Whole residual blocks as choices of the latency plan, beside every group's width.

Per-op time that no width removes (each conv, norm and activation call costs a fixed time) sets
much of a small model's time at batch 1: MobileNetV2's width plans there bought 2x in speed for
5x in MACs. Only removing the op removes its time, so under ``Channels(blocks=True)`` the
knapsack may also remove a residual block whole (``netslim.core.blocks.find_blocks``: a block
in a container whose output is its input plus a branch): it saves the block's layers' time and
the fixed time of its other ops (measured: the table times the model with its blocks out), and
loses ``weight`` times its inner groups' kept value. With calibration data each block's weight
is measured (:func:`block_weights`); without, every block weighs ``BLOCK_WEIGHT``. A removed
block becomes a :class:`BypassedBlock` (its output is its input), so module names and the plan's
group ids stay valid around it; a block that returns a tuple is not offered (a bypass could not
stand in for its other outputs).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from netslim.core.blocks import Block, BypassedBlock, find_blocks
from netslim.errors import PruningError
from netslim.importance import Calibration, batch_samples, iter_batches
from netslim.importance.blocks import score_blocks
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


BLOCK_CRITERION = "ablation"
"""How :func:`block_weights` scores a block: the loss increase with the block bypassed. On
resnet56 / Fashion-MNIST (bench/_latency_blocks_accuracy.py --scaled, run 14:46-15:21 of
2026-12-03 at 40ce6c0, seeds 0-2, batch 16, one solve, no reconstruction, one epoch of
fine-tuning), mean accuracy at 2x / 3x: one weight for every block 78.66% / 76.93%, Block
Influence 80.71% / 77.94%, ablation 80.89% / 78.27% (ahead of one weight on 5 of the 6 seed
and target pairs, level on the sixth)."""
BLOCK_SAMPLES = 1024
"""Calibration samples that score the blocks, at most (whole batches, at least one): ablation
runs the model once per block and batch, and the weights were chosen on 1024 samples (the
probe's and the accuracy part's 8 batches of 128). A calibration set read for more (say 32
batches, for reconstruction) would cost that many more passes for a choice never shown to
gain from them."""
MIN_SHARE = 1e-3
"""A block's score counts at least this share of the highest (an ablation score can be 0 or
below: bypassing a block can lower the loss on a few batches)."""


def block_weights(
    model: nn.Module, blocks: Sequence[Block], calibration: Calibration | None
) -> dict[str, float] | None:
    """Each block's weight from data: ``BLOCK_WEIGHT`` times its ``BLOCK_CRITERION`` score over
    the mean score of ``blocks`` (:func:`~netslim.core.blocks.find_blocks`' blocks, the plan's
    own list; scored on at most ``BLOCK_SAMPLES`` calibration samples), so the weights average
    ``BLOCK_WEIGHT`` and a block whose bypass costs the model more weighs more (one weight for
    every block let the plan remove a stage's first block, which carries most of its change,
    as readily as its last). None without calibration data
    or blocks, or when bypassing no block raises the loss. The model is scored in eval mode and
    left as it was."""
    if calibration is None or not blocks:
        return None
    batches, samples = [], 0
    for batch in iter_batches(model, calibration):
        batches.append(batch)
        samples += batch_samples(batch)
        if samples >= BLOCK_SAMPLES:
            break
    scores = score_blocks(model, blocks, batches, BLOCK_CRITERION, calibration.loss)
    floor = max(max(scores), 0.0) * MIN_SHARE
    scores = [max(s, floor) for s in scores]
    mean = statistics.mean(scores)
    if mean <= 0:  # bypassing no block raises the loss: nothing to tell them apart by
        return None
    return {b.name: BLOCK_WEIGHT * s / mean for b, s in zip(blocks, scores, strict=True)}


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
    weight: float | Mapping[str, float] = BLOCK_WEIGHT,
) -> tuple[BlockOption, ...]:
    """An option per block name that has table layers and a group of its own: its layers (by
    module name), the groups only those layers touch, and the fixed time of its other ops (norms,
    activations, its add) by its count of layers: measured per layer when the table bypassed
    the blocks (``build_table(blocks=...)``), else a share of the fixed remainder. ``weight``:
    one for every block, or per block name (:func:`block_weights`)."""
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
            if per_layer is None:  # never below 0: see ``latency_fit.fit_block_fixed``
                per_layer = max(table.remainder_fixed, 0.0) / len(table.layers)
            share = per_layer * len(inside)
            w = weight[name] if isinstance(weight, Mapping) else weight
            options.append(BlockOption(name, tuple(sorted(inside)), groups, share, w))
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
    """Replace each named block by a :class:`BypassedBlock` (checked first: all or nothing)."""
    check_bypass(model, names)
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent)
        if isinstance(holder, (nn.Sequential, nn.ModuleList)) and child.isdigit():
            holder[int(child)] = BypassedBlock()
        else:
            setattr(holder, child, BypassedBlock())
