"""Group lasso over the structural engine's coupled channel groups: λ·Σ_groups Σ_i ‖θ_{g,i}‖₂,
θ_{g,i} every parameter slice that channel ``i`` of group ``g`` owns (conv rows, BN entries,
consumer columns). Drives whole channels to zero together, so models without BatchNorm can be
slimmed (Yuan & Lin, 2006; Wen et al., 2016, "Learning Structured Sparsity in DNNs")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from netslim.errors import ConfigError
from netslim.regularization.base import Penalty


class GroupLassoPenalty(Penalty):
    """Built once from a traced model: ``GroupLassoPenalty(lam, model, example_inputs)``."""

    def __init__(self, lam: float, model: nn.Module, example_inputs: Any, *, ignore=()):
        super().__init__(lam)
        from netslim.structural.config import Channels
        from netslim.structural.engine import candidates
        from netslim.structural.groups import analyze

        if isinstance(example_inputs, Tensor):
            example_inputs = (example_inputs,)
        analysis = analyze(model, example_inputs)
        groups = candidates(analysis, Channels(ignore=tuple(ignore)))
        params = dict(model.named_parameters())
        self.slices: list[tuple[str, int, Tensor, Tensor]] = []
        for g in groups:
            for m in g.members:
                if m.is_param and m.name in params:
                    valid = (m.index >= 0).nonzero().flatten()
                    self.slices.append((m.name, m.dim, valid, m.index[valid]))
        if not self.slices:
            raise ConfigError("GroupLassoPenalty found no prunable channel groups in the model")
        self.group_sizes = [g.size for g in groups]
        self._owner = [
            k for k, g in enumerate(groups) for m in g.members if m.is_param and m.name in params
        ]

    def _unit_squares(self, params: dict[str, Tensor]) -> list[Tensor]:
        """Per group, the squared L2 norm of every channel unit (all slices it owns)."""
        device = next(iter(params.values())).device
        sq = [torch.zeros(n, device=device) for n in self.group_sizes]
        for (name, dim, pos, index), k in zip(self.slices, self._owner, strict=True):
            t = params[name]
            rows = t.movedim(dim, 0).index_select(0, pos.to(device))
            sq[k] = sq[k].index_add(
                0, index.to(device), rows.reshape(rows.shape[0], -1).pow(2).sum(1)
            )
        return sq

    def _unit_norms(self, params: dict[str, Tensor]) -> list[Tensor]:
        return [s.sqrt() for s in self._unit_squares(params)]

    @torch.no_grad()
    def prox_(self, model: nn.Module, tau: float) -> int:
        """Proximal step of ``tau·Σ‖θ_{g,i}‖₂`` (group soft-thresholding): every unit shrinks
        by ``tau`` in norm and a unit with norm <= ``tau`` becomes exactly zero, which the
        subgradient in the loss never reaches. Call it after each optimizer step with
        ``tau = lr·λ`` (and leave the penalty out of the loss); returns the zero units."""
        params = dict(model.named_parameters())
        norms = self._unit_norms(params)
        scale = [
            torch.clamp(1 - tau / n.clamp_min(torch.finfo(n.dtype).tiny), min=0) for n in norms
        ]
        for (name, dim, pos, index), k in zip(self.slices, self._owner, strict=True):
            t = params[name]
            f = torch.ones(t.shape[dim], dtype=t.dtype, device=t.device)
            f[pos.to(t.device)] = scale[k][index.to(t.device)].to(t.dtype)
            shape = [1] * t.dim()
            shape[dim] = t.shape[dim]
            t.mul_(f.view(shape))
        return int(sum(int((s == 0).sum()) for s in scale))

    def __call__(self, model: nn.Module) -> Tensor:
        if self.lam == 0:
            return torch.zeros((), device=next(model.parameters()).device)
        sq = self._unit_squares(dict(model.named_parameters()))
        return self.lam * torch.stack([(s + 1e-12).sqrt().sum() for s in sq]).sum()
