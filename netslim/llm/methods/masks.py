"""Mask selection shared by the per-weight methods (True = keep)."""

from __future__ import annotations

import torch
from torch import Tensor

from netslim.unstructured.nm import nm_mask


def lowest(scores: Tensor, sparsity: float, dim: int | None = None) -> Tensor:
    """Keep-mask removing the ``round(sparsity·n)`` lowest scores, over the whole matrix
    (``dim=None``) or independently along ``dim`` (each row compares its own entries).

    A threshold from ``kthvalue`` (linear time; ``topk``/sort with k ≈ n/2 are several times
    slower on CPU); ties at the threshold are broken by position so exactly k go.
    """
    flat = scores.flatten() if dim is None else scores.movedim(dim, -1)
    n = flat.shape[-1]
    k = round(sparsity * n)
    if k == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(flat, k, dim=-1, keepdim=True).values
    below = flat < threshold
    ties = flat == threshold  # quantized weights tie a lot: prune the first ones, in index order
    need = k - below.sum(-1, keepdim=True)
    keep = ~(below | (ties & (ties.cumsum(-1) <= need)))
    return keep.view_as(scores) if dim is None else keep.movedim(-1, dim).contiguous()


def select(scores: Tensor, sparsity: float, nm: tuple[int, int] | None, dim: int | None) -> Tensor:
    """N:M groups along the input dimension when ``nm`` is set, else :func:`lowest`."""
    if nm is not None:
        return nm_mask(scores, *nm)
    return lowest(scores, sparsity, dim)
