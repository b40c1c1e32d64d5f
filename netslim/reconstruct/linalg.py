"""Least-squares and OBS algebra shared by every layer-wise reconstruction in netslim.

For a layer ``y = W x`` with calibration inputs ``X`` (rows) the layer-wise objective
``‖XWᵀ − Y‖²`` has normal equations ``G w_r = c_r`` with ``G = XᵀX`` and ``C = XᵀY``. SparseGPT
(``netslim.llm.methods.sparsegpt``) walks ``G``'s inverse Cholesky factor column by column;
ThiNet / He et al. refit a channel-pruned consumer by solving the whole system; the
optimal-brain-surgeon update for a fixed mask (OBC, Frantar & Alistarh 2022) is the same system
restricted to each row's surviving inputs. Ridge damping is relative to ``mean(diag G)`` so one
setting works for any input scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

from netslim.errors import PruningError


def damped(gram: Tensor, damp: float) -> Tensor:
    """``G + λ·mean(diag G)·I`` (a copy): the ridge that keeps the solve well posed."""
    out = gram.clone()
    mean_diag = float(out.diagonal().mean()) if out.numel() else 0.0
    out.diagonal().add_(damp * (mean_diag if mean_diag > 0 else 1.0))
    return out


def inverse_cholesky(hessian: Tensor, damp: float) -> Tensor:
    """Upper Cholesky factor of ``(H + λ·mean(diag H)·I)⁻¹``; more damping if H is singular."""
    for factor in (1.0, 10.0, 100.0):
        lower, info = torch.linalg.cholesky_ex(damped(hessian, damp * factor))
        if int(info) == 0:
            inv = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if int(info) == 0:
                return upper
    raise PruningError("the calibration Hessian is not positive definite even with 100x damping")


def _cholesky(matrix: Tensor, damp: float) -> Tensor:
    for factor in (1.0, 10.0, 100.0, 1000.0):
        lower, info = torch.linalg.cholesky_ex(damped(matrix, damp * factor) if damp else matrix)
        if int(info) == 0:
            return lower
        damp = damp or 1e-8
    raise PruningError("the calibration Gram matrix is singular even with 1000x damping")


def ridge_solve(gram: Tensor, cross: Tensor, damp: float) -> Tensor:
    """``argmin_W ‖XWᵀ − Y‖² + λ‖W‖²`` from ``G = XᵀX`` (K×K) and ``C = XᵀY`` (K×O): W is O×K."""
    lower = _cholesky(gram, damp)
    return torch.cholesky_solve(cross, lower).t()


def masked_solve(gram: Tensor, cross: Tensor, keep: Tensor, damp: float) -> Tensor:
    """Per output row ``r``, the least-squares weights on the inputs ``keep[r]`` only (zeros
    elsewhere): the optimal-brain-surgeon update of every surviving weight for removing all of
    the row's pruned weights at once, exact rather than SparseGPT's one-pass approximation.
    ``keep`` is O×K bool; rows with the same support share one factorisation."""
    rows, k = keep.shape
    out = torch.zeros(rows, k, dtype=cross.dtype, device=cross.device)
    groups: dict[bytes, list[int]] = {}
    for r in range(rows):
        groups.setdefault(keep[r].cpu().numpy().tobytes(), []).append(r)
    for members in groups.values():
        support = keep[members[0]].nonzero().squeeze(1)
        if support.numel() == 0:
            continue
        sub = gram.index_select(0, support).index_select(1, support)
        lower = _cholesky(sub, damp)
        rhs = cross.index_select(0, support)[:, members]
        out[torch.tensor(members)[:, None], support[None, :]] = torch.cholesky_solve(rhs, lower).t()
    return out


def squared_error(weight: Tensor, gram: Tensor, cross: Tensor, target_sq: float) -> float:
    """``‖XWᵀ − Y‖²`` from the sufficient statistics (no activations kept)."""
    w = weight.to(gram.dtype)
    return float((w @ gram * w).sum() - 2 * (w * cross.t()).sum() + target_sq)
