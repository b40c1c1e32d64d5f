"""One pruning step under torchrun: same settings checked, masks decided once, result verified."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any

from torch import nn

from netslim.distributed.sync import broadcast_masks_, verify_consistent, verify_same


def prune_consistently_(model: nn.Module, config: Any, **kwargs: Any) -> dict[str, Any]:
    """``netslim.prune_`` on every rank, then rank 0's masks everywhere, then a consistency check.

    The config must be equal on every rank (ConfigError otherwise). Unstructured masks are
    computed on every rank from identical weights and then overwritten with rank 0's, so float
    ties cannot split the ranks. Structural plans change shapes: they must be deterministic
    (criteria seeded from the config), and :func:`verify_consistent` proves every rank removed
    the same channels before training goes on.
    """
    from netslim.api import prune_

    described = asdict(config) if is_dataclass(config) else repr(config)
    verify_same(json.loads(json.dumps(described, default=str)), f"{type(config).__name__} settings")
    summary = prune_(model, config, **kwargs)
    broadcast_masks_(model)
    verify_consistent(model, what=f"{type(config).__name__} pruning step")
    return summary
