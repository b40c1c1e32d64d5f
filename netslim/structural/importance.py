"""Per-index importance of a group, aggregated over every tensor slice the index owns.

Scoring the whole group (conv rows, BN entries, consumer columns, residual partners) rather than
one layer is what makes a removal decision reflect everything it deletes.

Criteria are small classes registered in ``CRITERIA`` (``@register``). Most score *elements*
(``element_scores``: a non-negative tensor shaped like a parameter, or ``None`` to skip it) and
the group score of index ``i`` is the sum over every member of the elements it owns; a few
override ``score`` for the whole group. Data-driven criteria collect their statistics once in
``prepare(model, calibration)`` (see ``netslim.importance``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from netslim.errors import ConfigError, UnsupportedModelError
from netslim.importance import Calibration, activation_stats, gradient_stats, input_norms, require
from netslim.importance.stats import LAYERS, NORMS
from netslim.importance.transforms import lamp_transform
from netslim.structural.groups import Group, Member

CRITERIA: dict[str, type[GroupCriterion]] = {}


def register(name: str):
    """Class decorator: make a :class:`GroupCriterion` selectable as ``Channels(criterion=name)``."""

    def wrap(cls: type[GroupCriterion]) -> type[GroupCriterion]:
        cls.name = name
        CRITERIA[name] = cls
        return cls

    return wrap


class GroupCriterion:
    """Base: sum of ``element_scores`` over the group's parameter slices."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    normalize: ClassVar[bool] = True  # global ranking divides by the group mean first

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        """Collect whatever the criterion needs from the model (and data) before scoring."""

    def applies(self, group: Group) -> bool:
        """Groups the criterion cannot score are left alone (e.g. no BatchNorm for ``bn``)."""
        return True

    def element_scores(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def score(
        self,
        group: Group,
        tensors: dict[str, torch.Tensor],
        generator: torch.Generator,
        cache: dict[tuple[str, int], torch.Tensor] | None,
    ) -> torch.Tensor:
        score = torch.zeros(group.size, dtype=torch.float64)
        cache = {} if cache is None else cache
        for m in group.members:
            if not m.is_param:
                continue  # running statistics are not learned importance
            per_pos = self._cached_position(m, tensors, cache)
            if per_pos is None:
                continue
            valid = m.index >= 0
            score.index_add_(0, m.index[valid], per_pos[valid])
        return self.finish(score)

    def fill_cache(
        self, groups: list[Group], tensors: dict[str, torch.Tensor], cache: dict
    ) -> None:
        """Per-index sums of every parameter slice ``groups`` will score, up front: the big
        reductions run on all threads, the many small per-group ops after them on one."""
        if type(self).score is not GroupCriterion.score:
            return  # scores the group another way
        for g in groups:
            for m in g.members:
                if m.is_param:
                    self._cached_position(m, tensors, cache)

    def _cached_position(
        self, m: Member, tensors: dict[str, torch.Tensor], cache: dict
    ) -> torch.Tensor | None:
        """``_per_position`` of one member, computed once per (tensor, dim); None (a tensor
        the criterion skips) is remembered too."""
        key = (m.name, m.dim)
        if key not in cache:
            cache[key] = self._per_position(m.name, tensors[m.name], m.dim)
        return cache[key]

    def _per_position(self, name: str, t: torch.Tensor, dim: int) -> torch.Tensor | None:
        others = [d for d in range(t.dim()) if d != dim % max(t.dim(), 1)]
        sums = self.position_sums(name, t.detach(), others)
        return None if sums is None else sums.to(torch.float64).cpu()

    def position_sums(self, name: str, t: torch.Tensor, others: list[int]) -> torch.Tensor | None:
        """``element_scores`` summed over the ``others`` dims (one value per index). Norm
        criteria override this to reduce without materialising a full-size score tensor."""
        e = self.element_scores(name, t)
        if e is None:
            return None
        e = e.float() if not e.is_floating_point() else e
        return e.sum(dim=others) if others else e

    def finish(self, score: torch.Tensor) -> torch.Tensor:
        return score


def _module_of(name: str) -> str:
    return name.rpartition(".")[0]


def _power_sums(t: torch.Tensor, others: list[int], p: int) -> torch.Tensor:
    """Σ|t|^p over the ``others`` dims, without a full-size temporary where torch allows.

    ``vector_norm`` reduces fast over the trailing (contiguous) dims but is ~25x slower when
    the kept dim is the last one (a Linear weight's input columns): there an elementwise power
    then a sum, which vectorises along the kept dim, is faster (in row chunks, so the
    temporary stays small)."""
    if not others:
        return t.abs() if p == 1 else t.square()
    if t.dim() - 1 in others:
        norm = torch.linalg.vector_norm(t, p, dim=others)
        return norm if p == 1 else norm.square()
    flat = t.reshape(-1, t.shape[-1])  # the kept dim is the last one
    out = torch.zeros(t.shape[-1], dtype=t.dtype, device=t.device)
    step = max(1, _CHUNK_ELEMENTS // t.shape[-1])  # bounded temporaries on big embeddings
    for start in range(0, flat.shape[0], step):
        rows = flat[start : start + step]
        out += (rows.abs() if p == 1 else rows.square()).sum(dim=0)
    return out


_CHUNK_ELEMENTS = 1 << 22


@register("l1")
class L1Norm(GroupCriterion):
    """Σ|w| over every slice an index owns (Li et al., 2017, "Pruning Filters for Efficient
    ConvNets")."""

    def element_scores(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.float().abs()

    def position_sums(self, name: str, t: torch.Tensor, others: list[int]) -> torch.Tensor:
        return _power_sums(t.float(), others, 1)


@register("l2")
class L2Norm(GroupCriterion):
    """sqrt(Σ w²) over every slice an index owns: the group norm (Fang et al., 2023, DepGraph)."""

    def element_scores(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        t = tensor.float()
        return t * t

    def position_sums(self, name: str, t: torch.Tensor, others: list[int]) -> torch.Tensor:
        return _power_sums(t.float(), others, 2)

    def finish(self, score: torch.Tensor) -> torch.Tensor:
        return score.sqrt()


@register("random")
class RandomScore(GroupCriterion):
    """Uniform random scores from the config's seeded generator: the baseline to beat."""

    def score(self, group, tensors, generator, cache) -> torch.Tensor:  # type: ignore[override]
        return torch.rand(group.size, generator=generator, dtype=torch.float64)


@register("bn")
class BNScale(GroupCriterion):
    """|γ| of the BatchNorm scales in the group (network slimming: Liu et al., 2017, "Learning
    Efficient Convolutional Networks through Network Slimming"). Ranked globally *without*
    normalisation, as in the paper; groups without BatchNorm are not pruned."""

    normalize = False

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        self.bn = {n for n, m in model.named_modules() if isinstance(m, NORMS) and m.affine}
        if not self.bn:
            raise UnsupportedModelError(
                f"criterion 'bn' ranks BatchNorm scales but {type(model).__name__} has no "
                "affine BatchNorm: use l2, taylor or fpgm (and group lasso to train for sparsity)"
            )

    def applies(self, group: Group) -> bool:
        return any(m.is_param and self._is_gamma(m.name) for m in group.members)

    def _is_gamma(self, name: str) -> bool:
        return name.endswith(".weight") and _module_of(name) in self.bn

    def element_scores(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        return tensor.float().abs() if self._is_gamma(name) else None


class _FromStats(GroupCriterion):
    """Element scores looked up from per-parameter statistics collected in ``prepare``."""

    needs_data = True
    stats: dict[str, torch.Tensor]

    def element_scores(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        return self.stats.get(name)


@register("taylor")
class Taylor(_FromStats):
    """First-order Taylor: Σ over owned elements of |Σ_batches w·∂L/∂w| — the loss change when
    the index is removed (Molchanov et al., 2019, "Importance Estimation for Neural Network
    Pruning")."""

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        self.stats, _ = gradient_stats(model, require(calibration, self.name), self.name)


@register("fisher")
class Fisher(_FromStats):
    """Second-order diagonal (OBD / empirical Fisher): Σ ½·F_ii·w² with F_ii = mean (∂L/∂w)²
    (LeCun et al., 1990, "Optimal Brain Damage"; Theis et al., 2018, Fisher pruning)."""

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        _, fisher = gradient_stats(model, require(calibration, self.name), self.name)
        params = {n: p.detach().float() for n, p in model.named_parameters()}
        self.stats = {n: 0.5 * f * params[n] ** 2 for n, f in fisher.items() if n in params}


@register("wanda")
class Wanda(_FromStats):
    """Σ |W_ij|·‖X_j‖₂ over owned weight elements, X the layer input over the calibration set
    (Sun et al., 2023, "A Simple and Effective Pruning Approach for Large Language Models"),
    for a structured index: its producer row and its consumer columns."""

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        norms = input_norms(model, require(calibration, self.name))
        self.stats = {}
        for mod_name, m in model.named_modules():
            if mod_name in norms and isinstance(getattr(m, "weight", None), torch.Tensor):
                w = m.weight.detach().float()
                shape = [1, -1] + [1] * (w.dim() - 2)
                n = norms[mod_name]
                if isinstance(m, LAYERS[1:]) and m.groups > 1:  # grouped conv: columns per group
                    n = n.view(m.groups, -1).repeat_interleave(w.shape[0] // m.groups, 0)
                    self.stats[f"{mod_name}.weight"] = w.abs() * n.view(w.shape[0], -1, *shape[2:])
                    continue
                self.stats[f"{mod_name}.weight"] = w.abs() * n.view(shape)


class _Activation(GroupCriterion):
    """Per-channel statistics of ``relu(output)``, read from the last producer of the group:
    a BatchNorm when the group has one, else the Linear/Conv rows."""

    needs_data = True
    channel: dict[str, torch.Tensor]

    def _rows(self, group: Group) -> list[Any]:
        members = [m for m in group.members if m.is_param and m.name.endswith(".weight")]
        bn = [m for m in members if _module_of(m.name) in self.norms and m.dim == 0]
        if bn:
            return bn
        return [m for m in members if _module_of(m.name) in self.layers and m.dim == 0]

    def prepare(self, model: nn.Module, calibration: Calibration | None) -> None:
        self.norms = {n for n, m in model.named_modules() if isinstance(m, NORMS)}
        self.layers = {n for n, m in model.named_modules() if isinstance(m, LAYERS)}
        apoz, mean = activation_stats(model, require(calibration, self.name))
        self.channel = self.pick(apoz, mean)

    def pick(self, apoz: dict, mean: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def applies(self, group: Group) -> bool:
        return any(_module_of(m.name) in self.channel for m in self._rows(group))

    def score(self, group, tensors, generator, cache) -> torch.Tensor:  # type: ignore[override]
        score = torch.zeros(group.size, dtype=torch.float64)
        for m in self._rows(group):
            stat = self.channel.get(_module_of(m.name))
            if stat is not None:
                valid = m.index >= 0
                score.index_add_(0, m.index[valid], stat.double().cpu()[valid])
        return score


@register("apoz")
class APoZ(_Activation):
    """1 − APoZ: the fraction of non-zero ``relu`` outputs per channel (Hu et al., 2016,
    "Network Trimming"); channels that are mostly zero are pruned first."""

    def pick(self, apoz: dict, mean: dict) -> dict[str, torch.Tensor]:
        return {n: 1.0 - v for n, v in apoz.items()}


@register("activation")
class MeanActivation(_Activation):
    """Mean of ``relu(output)`` per channel over the calibration set (Molchanov et al., 2017,
    mean-activation baseline)."""

    def pick(self, apoz: dict, mean: dict) -> dict[str, torch.Tensor]:
        return mean


@register("fpgm")
class FPGM(GroupCriterion):
    """Σ_j ‖F_i − F_j‖₂ over the filters F (rows) of every producer in the group: filters close to
    the layer's geometric median are replaceable by the others (He et al., 2019, "Filter Pruning
    via Geometric Median")."""

    def _per_position(self, name: str, t: torch.Tensor, dim: int) -> torch.Tensor | None:
        if dim != 0 or t.dim() < 2 or not name.endswith(".weight"):
            return None
        rows = t.detach().float().reshape(t.shape[0], -1)
        return torch.cdist(rows, rows).sum(1).to(torch.float64).cpu()


@register("lamp")
class LAMP(L2Norm):
    """LAMP on group norms: s_i² / Σ_{j: s_j ≥ s_i} s_j² (Lee et al., 2021, "Layer-adaptive
    Sparsity for the Magnitude-based Pruning"). The largest index of every group scores 1, so a
    global threshold never empties a group; already scale-free, ranked without normalisation."""

    normalize = False

    def finish(self, score: torch.Tensor) -> torch.Tensor:
        return lamp_transform(score)


def get(name: str) -> GroupCriterion:
    if name not in CRITERIA:
        raise ConfigError(f"unknown criterion {name!r} (choose from {', '.join(CRITERIA)})")
    return CRITERIA[name]()


def prepared(name: str, model: nn.Module, calibration: Calibration | None) -> GroupCriterion:
    """A criterion ready to score ``model`` (statistics collected)."""
    crit = get(name)
    crit.prepare(model, calibration)
    return crit


def group_scores(
    group: Group,
    tensors: dict[str, torch.Tensor],
    criterion: str | GroupCriterion,
    generator: torch.Generator,
    cache: dict[tuple[str, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Scores of shape ``[group.size]``; higher means more important (kept first)."""
    crit = get(criterion) if isinstance(criterion, str) else criterion
    return crit.score(group, tensors, generator, cache)


def normalized(score: torch.Tensor) -> torch.Tensor:
    """Scale-free scores so groups of different layers can be ranked together (global scope)."""
    mean = score.mean()
    return score / mean if mean > 0 else torch.zeros_like(score)
