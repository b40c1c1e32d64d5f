"""SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot"): prune and *reconstruct* each layer with approximate OBS updates.

For the layer-wise objective ‖XWᵀ − XŴᵀ‖² the Hessian is ``H = 2XᵀX`` (dampened by a fraction
of its mean diagonal). Columns are visited left to right; removing weight ``w_c`` costs
``w_c² / [H⁻¹]_cc`` and its error is spread over the not-yet-visited columns through row ``c``
of the upper Cholesky factor of ``H⁻¹`` (which equals the sequence of inverse Hessians of
shrinking column sets, so no re-inversion is needed). Updates are applied lazily: exactly
inside a block of ``blocksize`` columns, and once per block to the rest (Algorithm 1). Masks
are chosen adaptively per block (unstructured) or per group of M columns (N:M) from the same
OBS score.
"""

from __future__ import annotations

import torch
from torch import Tensor

from netslim._runtime import one_thread
from netslim.llm.calibration import LayerStats
from netslim.llm.config import LLMPrune
from netslim.llm.methods.masks import lowest
from netslim.llm.methods.registry import register_llm_method
from netslim.reconstruct.linalg import inverse_cholesky
from netslim.unstructured.nm import nm_mask


@register_llm_method("sparsegpt", needs={"gram"})
def sparsegpt(weight: Tensor, stats: LayerStats | None, config: LLMPrune) -> Tensor:
    assert stats is not None
    with one_thread():
        return _sparsegpt(weight, stats, config)


def _sparsegpt(weight: Tensor, stats: LayerStats, config: LLMPrune) -> Tensor:
    w = weight.detach().clone().float()
    hessian = stats.hessian().to(w.device)
    dead = hessian.diagonal() == 0  # inputs never active: any weight on them is free to drop
    hessian[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = inverse_cholesky(hessian, config.damp)
    cols = w.shape[1]
    nm = config.nm
    block = config.blocksize
    if nm is not None:  # a block must hold whole groups of M
        block = max(nm[1], block - block % nm[1])
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        d = u1.diagonal()
        if nm is None:
            keep = lowest(w1.square() / d.square()[None, :], config.sparsity)
        else:
            keep = torch.ones_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                score = w1[:, i : i + nm[1]].square() / d[i : i + nm[1]].square()[None, :]
                keep[:, i : i + nm[1]] = nm_mask(score, *nm)
            col = w1[:, i]
            q = col * keep[:, i]
            q1[:, i] = q
            e = (col - q) / d[i]
            w1[:, i:].addr_(e, u1[i, i:], alpha=-1.0)  # rank-1 update in place, no temporary
            err1[:, i] = e
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w
