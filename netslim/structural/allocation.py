"""How many indices each group keeps, and which: local ratio, global ranking, rounding.

Rules that hold for every allocation: a group never becomes empty (at least ``round_to``
indices, or all when smaller, are kept — a requested ratio is clamped, never raised as an error
unless it is 1.0 or more, which the config rejects), kept counts are rounded *up* to a multiple
of ``round_to``, and the highest-scoring indices are the ones kept.
"""

from __future__ import annotations

import math

import torch


def min_keep(size: int, round_to: int, fraction: float = 0.0) -> int:
    """The fewest indices a group of ``size`` may keep: one, ``round_to``, and ``fraction`` of
    it (a floor some allocations add), but never more than it has."""
    return min(size, max(1, round_to, math.ceil(fraction * size - 1e-9)))


def round_keep(kept: int, size: int, round_to: int) -> int:
    if round_to > 1:
        kept = int(math.ceil(kept / round_to) * round_to)
    return max(min_keep(size, round_to), min(size, kept))


def local_counts(sizes: dict[str, int], ratios: dict[str, float], round_to: int) -> dict[str, int]:
    """Kept count per group from its own ratio (the fraction of indices removed)."""
    return {
        gid: round_keep(size - int(math.floor(size * ratios[gid] + 1e-9)), size, round_to)
        for gid, size in sizes.items()
    }


def global_counts(
    sizes: dict[str, int], scores: dict[str, torch.Tensor], ratio: float, round_to: int
) -> dict[str, int]:
    """Remove the ``ratio`` fraction of all indices with the lowest normalised scores."""
    if not sizes:
        return {}
    gids = list(sizes)
    cands, owners = [], []
    for i, g in enumerate(gids):
        room = sizes[g] - min_keep(sizes[g], round_to)  # never a candidate: would empty it
        cands.append(torch.sort(scores[g].to(torch.float64)).values[:room])
        owners.append(torch.full((max(room, 0),), i, dtype=torch.long))
    flat, owner = torch.cat(cands), torch.cat(owners)
    budget = min(flat.numel(), int(math.floor(sum(sizes.values()) * ratio + 1e-9)))
    chosen = owner[torch.argsort(flat, stable=True)[:budget]]
    removed = torch.bincount(chosen, minlength=len(gids))
    return {
        g: round_keep(sizes[g] - int(removed[i]), sizes[g], round_to) for i, g in enumerate(gids)
    }


def keep_mask(score: torch.Tensor, kept: int) -> torch.Tensor:
    """Boolean mask of the ``kept`` highest scores (ties broken by lower index)."""
    mask = torch.zeros(score.numel(), dtype=torch.bool)
    if kept >= score.numel():
        mask[:] = True
        return mask
    order = torch.argsort(-score, stable=True)
    mask[order[:kept]] = True
    return mask
