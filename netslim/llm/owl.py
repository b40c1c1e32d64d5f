"""OWL: outlier-weighted layer-wise sparsity (Yin et al., 2024, "Outlier Weighed Layerwise
Sparsity: A Missing Secret Sauce for Pruning LLMs to High Sparsity").

Uniform sparsity treats every block alike, but blocks differ in how many *outlier* features they
carry — weights whose Wanda score ``|W_ij|·‖X_j‖`` is far above their layer's mean. Blocks rich
in outliers are hurt most by pruning, so OWL gives them a lower sparsity and outlier-poor blocks
a higher one: the outlier ratios ``D_i`` (fraction of scores above ``M`` × the layer mean) are
mapped linearly onto densities in ``[1−S−λ, 1−S+λ]`` and shifted so that the mean sparsity over
blocks stays ``S``. Ratios come from one pass of the dense model over the calibration data.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch
from torch import Tensor, nn

from netslim.llm.arch import block_linears, weight_oi
from netslim.llm.calibration import BlockInputs, collecting, run_block
from netslim.llm.config import LLMPrune
from netslim.llm.sequential import BlockSource, run_sequential


class OutlierStep:
    """Records each block's outlier ratio from its dense inputs; changes nothing. With
    ``keep_outputs`` it also keeps each block's dense output (the next block's input, so no copy
    is made)."""

    def __init__(self, m: float, keep_outputs: bool = False):
        self.m = m
        self.ratios: list[float] = []
        self.outputs: list[Tensor | None] | None = [] if keep_outputs else None

    def __call__(self, index: int, block: nn.Module, inputs: BlockInputs | None) -> Tensor:
        assert inputs is not None
        linears = block_linears(block)
        with collecting(block, dict.fromkeys(linears, {"sq"})) as stats:
            out = run_block(block, inputs)
        outliers = total = 0
        for name, module in linears.items():
            score = weight_oi(module).detach().float().abs() * stats[name].norms[None, :]
            outliers += int((score > self.m * score.mean()).sum())
            total += score.numel()
        self.ratios.append(outliers / max(total, 1))
        if self.outputs is not None:
            self.outputs.append(out)
        return out


def owl_sparsities(ratios: list[float], sparsity: float, lam: float) -> list[float]:
    """Per-block sparsities in ``[S−λ, S+λ]`` with mean ``S``: more outliers, fewer pruned."""
    r = torch.tensor(ratios, dtype=torch.float64)
    spread = float(r.max() - r.min())
    if spread == 0.0 or lam == 0.0:
        return [sparsity] * len(ratios)
    density = (r - r.min()) / spread * (2 * lam)
    density = density - density.mean() + (1.0 - sparsity)
    return [float(1.0 - d) for d in density]


class SparsityPlan(NamedTuple):
    """Per-block sparsities (``None``: uniform), the report's OWL figures, and the dense
    model's output of every block when they were kept (block reconstruction's targets)."""

    sparsities: list[float] | None
    info: dict
    dense_outputs: list[Tensor | None] | None = None


def plan_sparsities(
    source: BlockSource, inputs: BlockInputs | None, config: LLMPrune, keep_outputs: bool = False
) -> SparsityPlan:
    """Per-block sparsities for ``config`` and what they cost: with ``config.owl`` one extra
    dense pass over the blocks (they are only read). ``keep_outputs``: keep that pass's dense
    block outputs, which are exactly the targets block reconstruction would otherwise recompute
    with one more dense forward per block."""
    if not config.owl or inputs is None:
        return SparsityPlan(None, {})
    start = time.perf_counter()
    step = OutlierStep(config.owl_m, keep_outputs)
    run_sequential(source, BlockInputs(inputs.hidden.clone(), inputs.args, inputs.kwargs), step)
    sparsities = owl_sparsities(step.ratios, config.sparsity, config.owl)
    info = {
        "outlier_ratios": step.ratios,
        "block_sparsity": sparsities,
        "seconds": time.perf_counter() - start,
    }
    return SparsityPlan(sparsities, info, step.outputs)
