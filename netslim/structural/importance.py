"""Per-index importance of a group, aggregated over every tensor slice the index owns.

Scoring the whole group (conv rows, BN entries, consumer columns, residual partners) rather than
one layer is what makes a removal decision reflect everything it deletes.
"""

from __future__ import annotations

import torch

from netslim.errors import ConfigError
from netslim.structural.groups import Group

CRITERIA = ("l1", "l2", "random")


def group_scores(
    group: Group,
    tensors: dict[str, torch.Tensor],
    criterion: str,
    generator: torch.Generator,
    cache: dict[tuple[str, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Scores of shape ``[group.size]``; higher means more important (kept first)."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion {criterion!r} (choose from {', '.join(CRITERIA)})")
    if criterion == "random":
        return torch.rand(group.size, generator=generator, dtype=torch.float64)
    score = torch.zeros(group.size, dtype=torch.float64)
    for m in group.members:
        if not m.is_param:
            continue  # running statistics are not learned importance
        key = (m.name, m.dim)
        per_pos = None if cache is None else cache.get(key)
        if per_pos is None:
            per_pos = _per_position(tensors[m.name], m.dim, criterion)
            if cache is not None:
                cache[key] = per_pos
        valid = m.index >= 0
        score.index_add_(0, m.index[valid], per_pos[valid])
    return score.sqrt() if criterion == "l2" else score


def normalized(score: torch.Tensor) -> torch.Tensor:
    """Scale-free scores so groups of different layers can be ranked together (global scope)."""
    mean = score.mean()
    return score / mean if mean > 0 else torch.zeros_like(score)


def _per_position(t: torch.Tensor, dim: int, criterion: str) -> torch.Tensor:
    """Sum of |w| or w^2 over everything but ``dim`` (float32 math, float64 result)."""
    t = t.detach()
    if not t.is_floating_point():
        t = t.float()
    rows = t.movedim(dim, 0).reshape(t.shape[dim], -1)
    v = rows.abs().sum(1) if criterion == "l1" else torch.linalg.vector_norm(rows, dim=1) ** 2
    return v.to(torch.float64).cpu()
