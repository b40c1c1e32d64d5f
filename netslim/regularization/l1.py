"""L1 penalty on weights: λ·Σ|w| drives weights to exactly zero-ish, so magnitude pruning after
training removes less accuracy (Han et al., 2015; the lasso, Tibshirani 1996)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from netslim.regularization.base import Penalty


class L1Penalty(Penalty):
    """``λ·Σ|w|`` over the ``weight`` of the selected modules. Masked weights are read through
    their parametrization, so pruned entries add nothing and get no gradient."""

    def _value(self, modules: list[nn.Module]) -> Tensor:
        weights = [m.weight for m in modules if isinstance(getattr(m, "weight", None), Tensor)]
        terms = [w.abs().sum() for w in weights]
        return sum(terms[1:], terms[0]) if terms else torch.zeros(())
