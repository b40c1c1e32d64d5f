"""Find channels that are exactly dead or exactly constant, and what removing them costs.

Decide-only: nothing here changes the model. A channel index of one of the engine's groups is a
candidate when every path that computes it is cut (each producing conv/linear row is zero, or
the BatchNorm right after it has a zero scale: then the channel carries a constant, BN's shift
through the activation) or when every consumer ignores it (its input columns are all zero).
Candidates are then checked where it matters, at each consumer's input, on the example inputs
and random probes: the consumer's response to the channel alone must be the same vector at
every batch row and position. That vector is the consumer's bias correction; where it is not
uniform (zero padding meets a non-zero constant at the borders, or the value is not constant
after all) the channel is kept and the reason reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from netslim.structural.groups import Analysis, Group, Member

# relative tolerance for "the same vector at every position" (float64 arithmetic on float32
# activations; border effects of zero padding are of the order of the value itself)
UNIFORM_RTOL = 1e-6


@dataclass
class Decision:
    """What compaction will do: indices removed per group, bias corrections per consumer."""

    removed: dict[str, list[int]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    folds: dict[str, Tensor] = field(default_factory=dict)  # consumer module -> bias delta
    channels: list[dict[str, Any]] = field(default_factory=list)  # removed, with how
    kept: list[dict[str, Any]] = field(default_factory=list)  # candidates kept, with why


def role(modules: dict[str, nn.Module], m: Member) -> str:
    """``out``/``out_bias`` (a producing conv/linear), ``in`` (a consuming one), ``scale``/``bn``
    (BatchNorm), or ``other`` (anything compaction does not reason about)."""
    mod = modules.get(m.module)
    leaf = m.name.rpartition(".")[2]
    dense = isinstance(mod, nn.Linear) or (
        isinstance(mod, _ConvNd) and not mod.transposed and mod.groups == 1
    )
    if dense and leaf == "weight":
        return "out" if m.dim == 0 else "in"
    if dense and leaf == "bias":
        return "out_bias"
    if isinstance(mod, _BatchNorm) and leaf in ("weight", "bias", "running_mean", "running_var"):
        return "scale" if leaf == "weight" else "bn"
    return "other"


def zero_per_index(t: Tensor, m: Member, size: int) -> Tensor:
    """``out[i]``: every entry of ``t`` that group index ``i`` owns along ``m.dim`` is zero."""
    valid = (m.index >= 0).nonzero().flatten()
    rows = t.detach().movedim(m.dim, 0).index_select(0, valid.to(t.device))
    nonzero = rows.reshape(rows.shape[0], -1).ne(0).sum(1).cpu()
    counts = torch.zeros(size, dtype=torch.long).index_add_(0, m.index[valid], nonzero)
    return counts == 0


def _first_seen(analysis: Analysis) -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in analysis.graph.eval_records:
        for name in rec.stack:
            out.setdefault(name, rec.index)
    return out


def dead_sources(analysis: Analysis, g: Group, modules: dict[str, nn.Module]) -> Tensor:
    """Indices whose every producer is cut: a zero row, or a zero scale in the BatchNorm that
    follows it in forward order (before the next producer of the group)."""
    tensors = analysis.tensors
    order = _first_seen(analysis)
    producers = sorted(
        (m for m in g.members if role(modules, m) == "out"), key=lambda m: order.get(m.module, 0)
    )
    if not producers:
        return torch.zeros(g.size, dtype=torch.bool)
    scales = sorted(
        (m for m in g.members if role(modules, m) == "scale"), key=lambda m: order.get(m.module, 0)
    )
    dead = torch.ones(g.size, dtype=torch.bool)
    for k, p in enumerate(producers):
        cut = zero_per_index(tensors[p.name], p, g.size)
        start = order.get(p.module, 0)
        stop = order.get(producers[k + 1].module, 1 << 62) if k + 1 < len(producers) else 1 << 62
        bn = next((s for s in scales if start < order.get(s.module, 0) < stop), None)
        if bn is not None:
            cut |= zero_per_index(tensors[bn.name], bn, g.size)
        dead &= cut
    return dead


def ignored_by_consumers(analysis: Analysis, g: Group, modules: dict[str, nn.Module]) -> Tensor:
    """Indices every consuming conv/linear multiplies by zero columns only."""
    consumers = [m for m in g.members if role(modules, m) == "in"]
    out = torch.ones(g.size, dtype=torch.bool) if consumers else torch.zeros(g.size, dtype=bool)
    for c in consumers:
        out &= zero_per_index(analysis.tensors[c.name], c, g.size)
    return out


def partly_dead(analysis: Analysis, g: Group, modules: dict[str, nn.Module]) -> Tensor:
    """Indices with at least one zero producing row (reported when the group disagrees)."""
    out = torch.zeros(g.size, dtype=torch.bool)
    for p in g.members:
        if role(modules, p) == "out":
            out |= zero_per_index(analysis.tensors[p.name], p, g.size)
    return out


def _axis(mod: nn.Module) -> int:
    return 1 if isinstance(mod, _ConvNd) else -1


def response(mod: nn.Module, x: Tensor, m: Member, indices: Tensor) -> Tensor:
    """The consumer's output (float64, no bias) when its input holds only ``indices`` of the
    group, as rows of output vectors: ``(positions, out_features)``."""
    cols = torch.isin(m.index, indices)
    axis = _axis(mod)
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    xr = x.double() * cols.to(x.device, torch.float64).view(shape)
    w = mod.weight.detach().double()
    if isinstance(mod, _ConvNd):
        y = mod._conv_forward(xr, w, None).movedim(1, -1)
    else:
        y = F.linear(xr, w)
    return y.reshape(-1, y.shape[-1])


def _uniform(rows: list[Tensor]) -> bool:
    ref = rows[0][0]
    tol = UNIFORM_RTOL * (1.0 + float(max(r.abs().max() for r in rows)))
    return all(float((r - ref).abs().max()) <= tol for r in rows)


def _interior_uniform(mod: nn.Module, x: Tensor, m: Member, indices: Tensor) -> bool:
    """Uniform once the positions that see the padding are cropped away?"""
    pads = [int(p) for p in mod.padding] if isinstance(mod.padding, tuple) else []
    if not pads or not any(pads):
        return False
    cols = torch.isin(m.index, indices)
    shape = [1] * x.dim()
    shape[1] = x.shape[1]
    y = mod._conv_forward(
        x.double() * cols.to(x.device, torch.float64).view(shape),
        mod.weight.detach().double(),
        None,
    )
    for d, p in enumerate(pads):
        if p:
            y = y.narrow(2 + d, p, max(y.shape[2 + d] - 2 * p, 0))
    if y.numel() == 0:
        return False
    rows = y.movedim(1, -1).reshape(-1, y.shape[1])
    return _uniform([rows])


def constant_of(mod: nn.Module, x: Tensor, m: Member, index: int) -> float:
    """The value channel ``index`` holds at the consumer's input (first position)."""
    cols = (m.index == index).nonzero().flatten()
    return float(x.movedim(_axis(mod), 0).index_select(0, cols[:1].to(x.device)).flatten()[0])


def why_not(mod: nn.Module, xs: list[Tensor], m: Member, index: int) -> tuple[str, str]:
    """Why one channel's contribution at ``mod`` is not a bias: ``(kind, reason)``."""
    idx = torch.tensor([index])
    if all(_interior_uniform(mod, x, m, idx) for x in xs):
        c = constant_of(mod, xs[0], m, index)
        return "padding", (
            f"constant {c:.6g} meets the zero padding of {m.module}: folding it into a bias "
            "would be inexact at the borders"
        )
    return "varies", f"not constant at the input of {m.module} (it varies with the input)"


def fold_check(
    mod: nn.Module, xs: list[Tensor], m: Member, indices: list[int]
) -> tuple[Tensor | None, list[int]]:
    """The bias delta at ``mod`` for removing ``indices`` and the indices that must stay.

    All indices are tried together first (one forward per probe); only when that is not a
    bias are they tried one by one."""
    idx = torch.tensor(indices, dtype=torch.long)
    rows = [response(mod, x, m, idx) for x in xs]
    if _uniform(rows):
        return rows[0].mean(0).cpu(), []
    bad = [i for i in indices if not _uniform([response(mod, x, m, torch.tensor([i])) for x in xs])]
    good = torch.tensor([i for i in indices if i not in bad], dtype=torch.long)
    if good.numel() == 0:
        return None, bad
    return response(mod, xs[0], m, good).mean(0).cpu(), bad
