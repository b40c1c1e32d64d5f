"""Score transforms shared by the unstructured and structural criteria."""

from __future__ import annotations

import torch


def lamp_transform(sq: torch.Tensor) -> torch.Tensor:
    """LAMP scores from squared magnitudes ``sq`` (any shape, scored together)."""
    flat = sq.flatten().double()
    order = torch.argsort(flat, stable=True)
    sorted_sq = flat[order]
    suffix = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
    out = torch.empty_like(flat)
    out[order] = torch.where(suffix > 0, sorted_sq / suffix.clamp_min(1e-300), 0.0)
    return out.view_as(sq).to(sq.dtype)
