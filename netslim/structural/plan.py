"""A pruning plan: which indices of which group survive, as plain JSON.

Group ids are anchors derived from parameter names (``"layer1.0.conv1.weight:0"``), so a plan
made on one instance replays on a freshly built copy of the same architecture: re-trace, match
anchors, apply. ``netslim.save`` stores ``plan.to_dict()`` in the model history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from netslim.errors import ArtifactError, PruningError
from netslim.structural.groups import Analysis

VERSION = 2
"""2: ``bypass`` (blocks replaced by ``latency_blocks.BypassedBlock``, 2026-12-03); version 1
plans read as ever."""


@dataclass
class PruningPlan:
    """``keep[group_id]`` = sorted kept indices; ``sizes[group_id]`` = the group's full size;
    ``bypass``: names of residual blocks replaced by ``BypassedBlock`` after the widths."""

    keep: dict[str, list[int]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    bypass: list[str] = field(default_factory=list)
    example_inputs: Any = field(default=None, repr=False, compare=False)
    # The trace the plan was made on: apply reuses it while the model is untouched (not saved).
    traced_on: Analysis | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": VERSION if self.bypass else 1,  # older readers load what they can apply
            "groups": {g: {"size": self.sizes[g], "keep": list(k)} for g, k in self.keep.items()},
        }
        if self.bypass:
            out["bypass"] = list(self.bypass)
        return out

    @property
    def is_empty(self) -> bool:
        """Nothing to change: no channel removed and no block bypassed."""
        return not self.keep and not self.bypass

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningPlan:
        if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
            raise ArtifactError("malformed pruning plan: not an object with a 'groups' object")
        try:
            if int(data.get("version", 1)) not in (1, VERSION):
                raise ArtifactError(f"unsupported plan version {data.get('version')!r}")
            bypass = data.get("bypass", [])
            if not isinstance(bypass, list) or not all(isinstance(b, str) for b in bypass):
                raise ArtifactError("malformed pruning plan: 'bypass' is not a list of names")
            keep, sizes = {}, {}
            for gid, g in data["groups"].items():
                sizes[gid] = int(g["size"])
                keep[gid] = sorted(int(i) for i in g["keep"])
                if not keep[gid] or keep[gid][-1] >= sizes[gid] or keep[gid][0] < 0:
                    raise ArtifactError(f"plan group {gid!r}: kept indices out of range")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArtifactError(f"malformed pruning plan: {exc}") from exc
        return cls(keep, sizes, list(bypass))

    @property
    def removed(self) -> int:
        return sum(self.sizes[g] - len(k) for g, k in self.keep.items())

    def masks(self, analysis: Analysis) -> dict[int, torch.Tensor]:
        """Leaf -> kept mask on a traced model; fails loudly if the model does not match."""
        by_id = {g.id: g for g in analysis.groups}
        out: dict[int, torch.Tensor] = {}
        for gid, kept in self.keep.items():
            g = by_id.get(gid)
            if g is None:
                raise PruningError(f"plan group {gid!r} does not exist in this model", gid)
            if g.size != self.sizes[gid]:
                raise PruningError(
                    f"plan group {gid!r} has size {self.sizes[gid]}, model has {g.size}", gid
                )
            mask = torch.zeros(g.size, dtype=torch.bool)
            mask[torch.tensor(kept, dtype=torch.long)] = True
            out[g.leaf] = mask
        return out
