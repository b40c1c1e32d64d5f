"""Unstructured criteria beyond magnitude: LAMP, and data-driven Taylor, Fisher/OBD and Wanda.

Data-driven criteria collect statistics once in ``prepare(model, calibration)`` (see
``netslim.importance``) and then score each weight tensor by its key.
"""

from __future__ import annotations

from torch import Tensor, nn

from netslim.core.masks import canonical_name
from netslim.importance import Calibration, gradient_stats, input_norms, require
from netslim.importance.transforms import lamp_transform
from netslim.unstructured.criterion import Criterion, register_criterion


@register_criterion("l2")
class L2(Criterion):
    """w²: ranks like |w| (Han et al., 2015) but is the per-weight term of the group norm."""

    def scores(
        self, weight: Tensor, *, module: nn.Module | None = None, name: str | None = None
    ) -> Tensor:
        return weight.detach().float() ** 2


@register_criterion("lamp")
class LAMP(Criterion):
    """w_i² / Σ_{j: |w_j| ≥ |w_i|} w_j² within each tensor (Lee et al., 2021, "Layer-adaptive
    Sparsity for the Magnitude-based Pruning"): the largest weight of every layer scores 1, so a
    global threshold never empties a layer and sparsity is spread by layer size and spectrum."""

    def scores(
        self, weight: Tensor, *, module: nn.Module | None = None, name: str | None = None
    ) -> Tensor:
        return lamp_transform(weight.detach().float() ** 2)


class _DataCriterion(Criterion):
    needs_data = True
    stats: dict[str, Tensor]

    def _lookup(self, weight: Tensor, name: str | None) -> Tensor:
        s = self.stats.get(canonical_name(name or ""))
        if s is None or s.shape != weight.shape:
            return weight.detach().float().abs()  # not reached by the data: fall back to |w|
        return s.to(weight.device)


@register_criterion("taylor")
class Taylor(_DataCriterion):
    """|Σ_batches w·∂L/∂w|: first-order estimate of the loss change when w is zeroed
    (Molchanov et al., 2017/2019, Taylor expansion pruning)."""

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        self.stats, _ = gradient_stats(model, require(calibration, self.name), self.name)

    def scores(self, weight: Tensor, *, module=None, name=None) -> Tensor:
        return self._lookup(weight, name)


@register_criterion("fisher")
class Fisher(_DataCriterion):
    """½·F·w², F = mean_batches (∂L/∂w)²: the diagonal second-order (OBD) saliency with the
    empirical Fisher as Hessian (LeCun et al., 1990, "Optimal Brain Damage")."""

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        _, fisher = gradient_stats(model, require(calibration, self.name), self.name)
        weights = {canonical_name(n): p.detach().float() for n, p in model.named_parameters()}
        self.stats = {n: 0.5 * f * weights[n] ** 2 for n, f in fisher.items()}

    def scores(self, weight: Tensor, *, module=None, name=None) -> Tensor:
        return self._lookup(weight, name)


@register_criterion("wanda")
class Wanda(_DataCriterion):
    """|W_ij|·‖X_j‖₂, X the layer input over the calibration set (Sun et al., 2023, "A Simple
    and Effective Pruning Approach for Large Language Models"). Use ``scope="row"`` for the
    paper's per-output comparison, or ``nm=(2, 4)``."""

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        self.norms = input_norms(model, require(calibration, self.name))

    def scores(self, weight: Tensor, *, module=None, name=None) -> Tensor:
        mod = (name or "").rpartition(".")[0]
        norms = self.norms.get(mod)
        w = weight.detach().float().abs()
        if norms is None or not (name or "").endswith("weight") or w.dim() < 2:
            return w
        groups = getattr(module, "groups", 1)
        if groups > 1:
            norms = norms.view(groups, -1).repeat_interleave(w.shape[0] // groups, 0)
            return w * norms.view(w.shape[0], -1, *[1] * (w.dim() - 2)).to(w.device)
        return w * norms.view(1, -1, *[1] * (w.dim() - 2)).to(w.device)
