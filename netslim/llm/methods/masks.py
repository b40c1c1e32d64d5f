"""Mask selection shared by the per-weight methods (True = keep)."""

from __future__ import annotations

from torch import Tensor

from netslim.core.select import fraction_count, lowest_k
from netslim.unstructured.nm import nm_mask


def lowest(scores: Tensor, sparsity: float, dim: int | None = None) -> Tensor:
    """Keep-mask removing the ``round(sparsity·n)`` lowest scores, over the whole matrix
    (``dim=None``) or independently along ``dim`` (each row compares its own entries)."""
    n = scores.numel() if dim is None else scores.shape[dim]
    return ~lowest_k(scores, fraction_count(sparsity, n), dim)


def select(scores: Tensor, sparsity: float, nm: tuple[int, int] | None, dim: int | None) -> Tensor:
    """N:M groups along the input dimension when ``nm`` is set, else :func:`lowest`."""
    if nm is not None:
        return nm_mask(scores, *nm)
    return lowest(scores, sparsity, dim)
