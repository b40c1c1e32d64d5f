"""Analytic parameter and MAC counts of a model *as it would be* after a plan.

Counting from the traced algebra (each dim's size after pruning) needs no model surgery, so a
target search can try dozens of global ratios in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from netslim.core.names import first_within
from netslim.structural.groups import Analysis


def _sizer(analysis: Analysis, kept: dict[int, int]):
    A = analysis.graph.atoms
    cache: dict[int, int] = {}

    def size(a: int) -> int:
        r = A.find(a)
        if r not in cache:
            cache[r] = A.new_size(r, kept)
        return cache[r]

    return size


def count_params(
    analysis: Analysis, kept: dict[int, int] | None = None, bypassed: Sequence[str] = ()
) -> int:
    """Parameters after pruning (unique tensors; untraced parameters count unchanged), none of
    the ``bypassed`` blocks'."""
    g = analysis.graph
    size = _sizer(analysis, kept or {})
    total = 0
    for name, t in g.tensors.items():
        if not g.is_param[name] or bypassed and first_within(name, bypassed):
            continue
        hit = g.layouts.get(id(t))
        if hit is None or hit[0] is not t:
            total += t.numel()
            continue
        n = 1
        for a in hit[1]:
            n *= size(a)
        total += n
    return total


def count_macs(
    analysis: Analysis, kept: dict[int, int] | None = None, bypassed: Sequence[str] = ()
) -> int:
    """Multiply-accumulates of convolutions, matmuls and attention in the traced forward, none
    of the ``bypassed`` blocks'."""
    size = _sizer(analysis, kept or {})
    total = 0
    for rec in analysis.graph.eval_records:
        if bypassed and rec.module and first_within(rec.module, bypassed):
            continue
        for prod in rec.info.get("macs", ()):
            n = 1
            for a in prod:
                n *= size(a)
            total += n
    return total
