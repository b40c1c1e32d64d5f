"""N:M semi-structured sparsity: in every group of M consecutive weights along the input
dimension at most N are non-zero (2:4 is what NVIDIA Ampere sparse tensor cores accelerate;
Mishra et al., 2021, "Accelerating Sparse Deep Neural Networks").

Groups run along dim 1 (``in_features`` of a Linear, input channels of a Conv at each kernel
position), matching the layout sparse GEMM kernels expect.
"""

from __future__ import annotations

import torch
from torch import Tensor

from netslim.errors import ConfigError


def validate_nm(n: int, m: int) -> None:
    for label, value in (("N", n), ("M", m)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"N:M sparsity needs positive integers, got {label}={value!r}")
    if n >= m:
        raise ConfigError(f"N:M sparsity needs N < M, got {n}:{m}")


def _groups(t: Tensor, m: int) -> Tensor:
    """(rows, M) view: input dimension last, then split into consecutive groups of M."""
    return t.movedim(1, -1).reshape(-1, m)


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Bool mask keeping the N highest-scoring entries of each group (ties: lower index wins)."""
    validate_nm(n, m)
    if scores.dim() < 2 or scores.shape[1] % m:
        raise ConfigError(
            f"N:M needs an input dimension divisible by M={m}, got shape {tuple(scores.shape)}"
        )
    groups = _groups(scores, m)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order[:, :n], True)
    moved = scores.movedim(1, -1).shape
    return keep.reshape(moved).movedim(-1, 1).contiguous()


def check_nm(weight: Tensor, n: int, m: int) -> bool:
    """Whether every group of M along the input dimension has at most N non-zeros."""
    if weight.dim() < 2 or weight.shape[1] % m:
        return False
    return bool(((_groups(weight, m) != 0).sum(dim=-1) <= n).all())
