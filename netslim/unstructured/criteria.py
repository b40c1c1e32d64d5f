"""Importance criteria: a score per weight entry, higher = more worth keeping.

Criteria only score; ``allocation`` decides how many entries to drop and where. New criteria
register themselves with ``@register_criterion("name")`` and become selectable by name in
``Unstructured(criterion=...)``.
"""

from __future__ import annotations

import zlib

import torch
from torch import Tensor, nn

from netslim.core.config import choice
from netslim.unstructured.criterion import _CRITERIA, Criterion, register_criterion


def available_criteria() -> list[str]:
    _load_builtin()
    return sorted(_CRITERIA)


def get_criterion(name: str, *, seed: int = 0) -> Criterion:
    """The criterion registered as ``name``; unknown names raise ConfigError listing valid ones."""
    _load_builtin()
    choice("criterion", name, available_criteria())
    return _CRITERIA[name](seed=seed)


@register_criterion("l1")
class L1(Criterion):
    """Magnitude |w|: small weights contribute least to the output (Han et al., 2015,
    "Learning both Weights and Connections for Efficient Neural Networks")."""

    def scores(
        self, weight: Tensor, *, module: nn.Module | None = None, name: str | None = None
    ) -> Tensor:
        return weight.detach().abs()


@register_criterion("random")
class Random(Criterion):
    """Uniform random scores: the baseline every real criterion must beat. Seeded per tensor by
    ``seed`` and the tensor's key, so results do not depend on the order layers are scored."""

    def scores(
        self, weight: Tensor, *, module: nn.Module | None = None, name: str | None = None
    ) -> Tensor:
        seed = (self.seed * 1_000_003 + zlib.crc32((name or "").encode())) % 2**63
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(weight.shape, generator=generator).to(weight.device)


def _load_builtin() -> None:
    """The data-driven and LAMP criteria live in their own module; importing it registers them."""
    import netslim.unstructured.criteria_data  # noqa: F401
