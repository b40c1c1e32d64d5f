"""Counts tied by code that derives a size from another tensor's width.

The classic attention code reads its input's width and splits it over the heads::

    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
    ...
    x = out.transpose(1, 2).reshape(B, N, C)

Nothing ties the residual's channels to the heads' indices (any residual channels and any
heads may go), but their *counts* are tied: the residual must keep ``head_dim`` channels per
kept head. The index algebra cannot say that; the check forward shows it (the reshape asks for
``C' // H'`` where the weights give ``head_dim``, or for ``C'`` where they give
``H' * head_dim``). :func:`find_ties` reads such a failure as a :class:`CountTie`, and
:func:`tied_counts` makes every plan honour the ties: the wide group keeps a whole number of
heads' worth of channels, and the heads follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netslim.core.names import within


@dataclass(frozen=True)
class CountTie:
    """After pruning, ``wide`` must keep exactly ``per`` channels for each kept ``narrow``
    index (``C' == per * H'``); atoms are roots of the algebra when the tie is made."""

    wide: int
    narrow: int
    per: int


def find_ties(
    graph: Any, rec: Any, got: list | None, kept: dict[int, int]
) -> tuple[list[CountTie], list[int]]:
    """The ties that explain why op ``rec`` asked for the sizes ``got`` instead of the ones
    the plan (``kept``: leaf -> kept count) gives its output, and the dims to keep whole for
    them to hold (the per-head width the tie counts in); ``([], [])`` when none does."""
    A = graph.atoms
    if not got or not rec.outs or len(got[0]) != len(rec.outs[0]):
        return [], []
    dims = rec.outs[0]
    asked = list(got[0])
    want = [A.new_size(a, kept) for a in dims]
    old = [A.size(a) for a in dims]
    # widths the plan shrinks: a size the code kept at its old value is a constant, not read
    widths = [x for x in _widths_in(graph, rec.module) if A.new_size(x, kept) != A.size(x)]
    for j, (g, w) in enumerate(zip(asked, want, strict=True)):
        if g == w:
            continue
        # ``C // H``: the head width the code computed from a pruned width C and the heads
        for i, (gi, wi) in enumerate(zip(asked, want, strict=True)):
            if i == j or gi != wi or w != old[j] or old[i] < 2 or A.is_locked(dims[i]):
                continue  # a locked or single dim (the batch) is no head count
            for x in widths:
                if A.size(x) == old[i] * old[j] and A.new_size(x, kept) // wi == g:
                    tie = _tie(A, x, dims[i], old[j])
                    if tie:
                        return tie, [dims[j]]
        # ``C``: the heads x head_dim width the code took from a pruned width C
        parts = A.leaves(dims[j])
        if len(parts) == 2:
            for x in widths:
                if A.size(x) != old[j] or A.new_size(x, kept) != g:
                    continue
                if tie := _tie(A, x, parts[0], A.size(parts[1])):
                    return tie, [parts[1]]  # head_dim stays whole
    return [], []


def _tie(A: Any, wide: int, narrow: int, per: int) -> list[CountTie]:
    leaves_w, leaves_n = A.leaves(wide), A.leaves(narrow)
    if len(leaves_w) != 1 or len(leaves_n) != 1 or A.find(wide) == A.find(narrow):
        return []
    return [CountTie(A.find(wide), A.find(narrow), per)]


def _widths_in(graph: Any, module: str) -> list[int]:
    """Candidate widths the module's code could have read: every dim its ops touched, in the
    order they were first met (its input's come first)."""
    return list(dict.fromkeys(graph.atoms.find(a) for a in _dims_in(graph, module)))


def _dims_in(graph: Any, module: str) -> list[int]:
    """Every dim of every op run inside ``module``, in trace order."""
    return [
        a
        for r in graph.eval_records
        if not module or within(r.module, module)
        for d in r.ins + r.outs
        for a in d
    ]


def in_twins(graph: Any, module: str, twins: list[str], found: list[CountTie], whole: list[int]):
    """The same ties and whole dims in each module of ``twins`` (the same code run on other
    blocks): atoms matched by position among the two modules' ops, then through products."""
    A = graph.atoms
    mine = _dims_in(graph, module)
    ties, keep = list(found), list(whole)
    for twin in twins:
        theirs = _dims_in(graph, twin)
        if len(theirs) != len(mine):
            continue
        match: dict[int, int] = {}
        for a, b in zip(mine, theirs, strict=True):
            _match(A, a, b, match)
        for t in found:
            w, n = match.get(A.find(t.wide)), match.get(A.find(t.narrow))
            if w is not None and n is not None:
                ties += _tie(A, w, n, t.per)
        keep += [match[A.find(a)] for a in whole if A.find(a) in match]
    return ties, keep


def _match(A: Any, a: int, b: int, match: dict[int, int]) -> None:
    ra, rb = A.find(a), A.find(b)
    if ra in match or A.size(ra) != A.size(rb):
        return
    match[ra] = rb
    da, db = A.decomp(ra), A.decomp(rb)
    if da is not None and db is not None and da[0] == db[0] and len(da[1]) == len(db[1]):
        for x, y in zip(da[1], db[1], strict=True):
            _match(A, x, y, match)


def tied_counts(
    counts: dict[str, int], ties: list[CountTie], groups: list[Any], atoms: Any
) -> dict[str, int]:
    """``counts`` (group id -> kept count) changed as little as possible so that every tie
    holds: the wide group keeps a whole number of ``per``-wide blocks (the nearest, at least
    one) and each tied narrow group keeps that number. A side that may not shrink (locked, not
    a candidate) keeps the other whole."""
    if not ties:
        return counts
    by_root = {atoms.find(g.leaf): g for g in groups}
    out = dict(counts)
    for wide, tied in _by_wide(ties, atoms).items():
        gw = by_root.get(wide)
        narrow = [(by_root.get(n), per) for n, per in tied]
        pers = {per for _, per in narrow}
        whole = gw is None or any(g is None for g, _ in narrow) or len(pers) != 1
        if whole:
            for g in [gw] + [g for g, _ in narrow]:
                if g is not None:
                    out[g.id] = g.size
            continue
        per = pers.pop()
        n_wide = out.get(gw.id, gw.size)
        limit = min(g.size for g, _ in narrow)
        heads = min(max(1, int(n_wide / per + 0.5)), limit)
        out[gw.id] = min(heads * per, gw.size)
        for g, _ in narrow:
            out[g.id] = heads
    return out


def _by_wide(ties: list[CountTie], atoms: Any) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for t in ties:
        out.setdefault(atoms.find(t.wide), []).append((atoms.find(t.narrow), t.per))
    return out
