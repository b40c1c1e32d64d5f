"""L1 on BatchNorm scales, the training half of network slimming (Liu et al., 2017, "Learning
Efficient Convolutional Networks through Network Slimming"): λ·Σ|γ| pushes the scales of
unneeded channels towards zero, so pruning the smallest γ globally costs little accuracy."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from netslim.errors import ConfigError, UnsupportedModelError
from netslim.regularization.base import Penalty

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class BNScalePenalty(Penalty):
    """``λ·w(step)·Σ|γ|`` over affine BatchNorm layers; ``warmup`` steps ramp ``w`` from 0 to 1
    linearly (call :meth:`step` once per optimizer step, e.g. from ``train(on_step=...)``)."""

    default_types = BATCHNORMS

    def __init__(self, lam: float, modules=None, *, warmup: int = 0):
        super().__init__(lam, modules)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"warmup must be an int >= 0 steps, got {warmup!r}")
        self.warmup = warmup
        self.steps = 0

    def step(self, steps: int | None = None) -> None:
        self.steps = self.steps + 1 if steps is None else steps

    @property
    def scale(self) -> float:
        return 1.0 if self.warmup == 0 else min(1.0, self.steps / self.warmup)

    def _value(self, modules: list[nn.Module]) -> Tensor:
        gammas = [m.weight for m in modules if isinstance(getattr(m, "weight", None), Tensor)]
        if not gammas:
            raise UnsupportedModelError(
                "BNScalePenalty needs affine BatchNorm layers; use GroupLassoPenalty instead"
            )
        return self.scale * torch.stack([g.abs().sum() for g in gammas]).sum()

    def __call__(self, model: nn.Module) -> Tensor:
        if self.modules is None and not any(isinstance(m, BATCHNORMS) for m in model.modules()):
            raise UnsupportedModelError(
                f"{type(model).__name__} has no BatchNorm: network slimming's BNScalePenalty "
                "cannot apply; use GroupLassoPenalty (group lasso over coupled channel groups)"
            )
        return super().__call__(model)
