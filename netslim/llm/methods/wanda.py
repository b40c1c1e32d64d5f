"""Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for Large Language
Models"): score ``|W_ij| · ‖X_j‖₂`` and compare scores within each output row.

Weighting by the input norm keeps weights that read the few large-magnitude activation
features of LLMs; the per-row comparison (rather than per layer) keeps every output neuron
equally dense, which the paper found matters for LLMs. No weight update, one forward pass.
"""

from __future__ import annotations

from torch import Tensor

from netslim.llm.calibration import LayerStats
from netslim.llm.config import LLMPrune
from netslim.llm.methods.masks import select
from netslim.llm.methods.registry import register_llm_method


@register_llm_method("wanda", needs={"sq"})
def wanda(weight: Tensor, stats: LayerStats | None, config: LLMPrune) -> Tensor:
    assert stats is not None
    scores = weight.abs() * stats.norms.to(weight.device)[None, :]
    return weight * select(scores, config.sparsity, config.nm, dim=1)
