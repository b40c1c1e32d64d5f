"""Prunable groups: the free leaves of the channel algebra, with every tensor slice they own.

A group is one index space (e.g. the 64 output channels of ``layer1.0.conv1``) together with
all parameter/buffer dims whose positions it indexes (conv rows, BN entries, the next conv's
input columns, residual partners, ...). Removing index ``i`` of a group removes, in every
member, the positions whose leaf index is ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from netslim._runtime import one_thread, paused_gc
from netslim.core.masks import canonical_name
from netslim.structural.atoms import PROD
from netslim.structural.graph import Graph
from netslim.structural.trace import trace


@dataclass
class Member:
    """One tensor dim of a group: ``index[p]`` is the group index at position ``p`` (-1: none).
    ``name`` is the one that survives masking (``fc.weight`` for a masked weight, whose storage
    is ``fc.parametrizations.weight.original``): ``Analysis.tensors[name]`` holds its values."""

    name: str
    dim: int
    index: torch.Tensor
    is_param: bool

    @property
    def module(self) -> str:
        return self.name.rpartition(".")[0]


@dataclass
class Group:
    """One prunable index space. ``id`` is a stable anchor such as ``"layer1.0.conv1.weight:0"``."""

    id: str
    leaf: int
    size: int
    members: list[Member] = field(default_factory=list)
    structure: bool = False  # whole heads / conv groups (a major factor over other channels)
    within: bool = False  # channels inside heads/groups whose heads/groups are prunable too
    width_stat: bool = False  # reduced by a mean/var/norm: exact over kept channels only
    conv_groups: bool = False  # the group count of grouped convs / GroupNorm (kept by default)

    @property
    def modules(self) -> list[str]:
        return sorted({m.module for m in self.members})

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "members": [f"{m.name}:{m.dim}" for m in self.members],
            "structure": self.structure,
            "within": self.within,
            "width_stat": self.width_stat,
            "conv_groups": self.conv_groups,
        }

    def __repr__(self) -> str:
        return f"Group({self.id!r}, size={self.size}, members={len(self.members)})"


@dataclass
class Analysis:
    """A traced model: the algebra, its prunable groups and the reported boundaries."""

    graph: Graph
    groups: list[Group]

    @cached_property
    def tensors(self) -> dict[str, torch.Tensor]:
        """Member name -> the tensor the forward computes with (``Graph.effective``)."""
        return self.graph.effective()

    def group(self, gid: str) -> Group:
        for g in self.groups:
            if g.id == gid:
                return g
        raise KeyError(gid)


def _layout(graph: Graph, name: str) -> list[int] | None:
    t = graph.tensors[name]
    hit = graph.layouts.get(id(t))
    return hit[1] if hit is not None and hit[0] is t else None


def _roles(
    graph: Graph,
    atom: int,
    free: set[int],
    major: set[int],
    minor: set[int],
    conv: set[int],
    grouped: set[int],
    heads: set[int],
) -> None:
    """Mark leaves that are major factors over other free leaves (heads) and those below.
    Conv/GroupNorm group counts are the exception: their per-group channels are what is
    pruned (the group count stays), so they are collected in ``grouped`` instead."""
    A = graph.atoms
    d = A.decomp(atom)
    if d is None:
        return
    kind, parts = d
    if kind == PROD:
        for i, p in enumerate(parts[:-1]):
            above = [leaf for leaf in A.leaves(p) if leaf in free]
            below = [leaf for q in parts[i + 1 :] for leaf in A.leaves(q) if leaf in free]
            if above and below and set(above) <= conv:
                grouped.update(above)
            elif above and below and set(above) & heads:
                major.update(above)
                minor.update(below)
    for p in parts:
        _roles(graph, p, free, major, minor, conv, grouped, heads)


def build_groups(graph: Graph) -> list[Group]:
    A = graph.atoms
    stat = A.stat_leaves()
    order: list[str] = []
    seen: set[str] = set()
    for name in list(graph.tensors):  # named_parameters then named_buffers order
        if name in graph.used and name not in seen:
            seen.add(name)
            order.append(name)
    maps: dict[tuple[str, int], dict[int, torch.Tensor]] = {}
    free: set[int] = set()
    param_leaves: set[int] = set()
    for name in order:
        layout = _layout(graph, name)
        if layout is None:
            continue
        for d, a in enumerate(layout):
            m = A.index_map(a)
            maps[(name, d)] = m
            for leaf in m:
                if not A.is_locked(leaf) and A.size(leaf) > 1:
                    free.add(leaf)
                    if graph.is_param[name]:
                        param_leaves.add(leaf)
    free &= param_leaves
    major: set[int] = set()
    minor: set[int] = set()
    grouped: set[int] = set()
    conv = {
        leaf
        for rec in graph.records
        if rec.kind in ("conv", "stat") and rec.info.get("groups") is not None
        for leaf in A.leaves(rec.info["groups"])
    }
    heads: set[int] = set()  # attention heads: batch dims of SDPA / batched matmuls
    for rec in graph.records:
        if rec.kind == "sdpa":
            heads.update(A.leaves(rec.info["q_heads"]) + A.leaves(rec.info["kv_heads"]))
        elif rec.name in ("bmm", "baddbmm") and rec.outs:
            heads.update(A.leaves(rec.outs[0][0]))
    for name in order:
        layout = _layout(graph, name)
        for a in layout or []:
            _roles(graph, a, free, major, minor, conv, grouped, heads)
    groups: dict[int, Group] = {}
    for (name, d), m in maps.items():
        plain = canonical_name(name)  # a masked weight's group is named as the plain one
        # numbered among all non-trivial leaves (free or not), so ids do not depend on locks
        here = [leaf for leaf in m if A.size(leaf) > 1]
        for k, leaf in enumerate(here):
            if leaf not in free:
                continue
            g = groups.get(leaf)
            if g is None:
                gid = f"{plain}:{d}" + (f"#{k}" if len(here) > 1 else "")
                g = groups[leaf] = Group(
                    gid, leaf, A.size(leaf), structure=leaf in major,
                    within=leaf in minor, width_stat=leaf in stat, conv_groups=leaf in grouped,
                )  # fmt: skip
            g.members.append(Member(plain, d, m[leaf], graph.is_param[name]))
    return list(groups.values())


@paused_gc()
def analyze(model: nn.Module, example_inputs: Any, *, meta: bool = True) -> Analysis:
    """Trace (on meta tensors when the model allows, see ``trace``) and find the groups."""
    graph = trace(model, example_inputs, meta=meta)
    with one_thread():
        return Analysis(graph, build_groups(graph))


def groups(model: nn.Module, example_inputs: Any) -> list[Group]:
    """Trace ``model`` on ``example_inputs`` and list its prunable groups (nothing is changed)."""
    return analyze(model, example_inputs).groups
