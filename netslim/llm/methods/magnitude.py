"""Magnitude pruning, layer-wise: drop the smallest |w| of each matrix (Han et al., 2015).

The data-free baseline both Wanda and SparseGPT compare against; on LLMs it collapses early
because a few input features carry outsized activations that magnitude alone cannot see.
"""

from __future__ import annotations

from torch import Tensor

from netslim.llm.calibration import LayerStats
from netslim.llm.config import LLMPrune
from netslim.llm.methods.masks import select
from netslim.llm.methods.registry import register_llm_method


@register_llm_method("magnitude", needs=set())
def magnitude(weight: Tensor, stats: LayerStats | None, config: LLMPrune) -> Tensor:
    return weight * select(weight.abs(), config.sparsity, config.nm, dim=None)
