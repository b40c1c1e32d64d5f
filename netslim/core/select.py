"""Turning a fraction into a count and choosing the lowest scores: one rule each, shared by
unstructured masks, per-weight LLM methods and block removal."""

from __future__ import annotations

import torch
from torch import Tensor


def fraction_count(fraction: float, n: int) -> int:
    """How many of ``n`` a ``fraction`` removes: ``round(fraction * n)`` (Python rounding, as
    ``torch.nn.utils.prune`` does). Channel allocation floors instead (``structural.allocation``:
    never remove more channels than asked, then round kept counts up to ``round_to``)."""
    return round(fraction * n)


def lowest_k(scores: Tensor, k: int | Tensor, dim: int | None = None) -> Tensor:
    """Bool mask (shape of ``scores``) of the ``k`` lowest scores, over all of them
    (``dim=None``) or independently along ``dim``; ties go to the lower index so exactly ``k``
    are chosen. A ``kthvalue`` threshold (linear time, O(n) memory) instead of a sort."""
    flat = scores.flatten() if dim is None else scores.movedim(dim, -1)
    n = flat.shape[-1]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(flat, k, dim=-1, keepdim=True).values
    below = flat < threshold
    ties = flat == threshold  # quantized weights tie a lot: take the first ones, in index order
    need = k - below.sum(-1, keepdim=True)
    drop = below | (ties & (ties.cumsum(-1) <= need))
    return drop.view_as(scores) if dim is None else drop.movedim(-1, dim).contiguous()
