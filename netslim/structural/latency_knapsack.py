"""Kept widths under a time budget: a multiple-choice knapsack over the latency table.

Each group chooses one kept width among the fast ends of its cost staircase (multiples of
``round_to``); its value is the kept importance (the sum of its highest scores, normalised per
group as global ranking does); its cost is the predicted time of the layers it touches.

A conv's time depends on *two* groups (input and output width), so the cost does not split
into a sum over groups. Three starts are each refined by exact cost and the best kept: the
knapsack on costs linearised at the whole widths (each group charged an equal share of each
layer it touches), its Lagrangian relaxation solved with the exact pairwise costs by
coordinate ascent at a bisected price per ms, and the best uniform fraction. The refinement
cuts (least value lost per ms saved) until the exact prediction fits, grows (most value per
ms) while it still fits, then exchanges a step of one group for what the others can buy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from netslim.structural.allocation import min_keep
from netslim.structural.knapsack import fast_end, mckp
from netslim.structural.latency_blocks import BlockOption
from netslim.structural.latency_table import LatencyTable, grid

# Every group keeps at least this fraction of its channels under a time target. The knapsack's
# objective is additive: shrinking a group loses its dropped channels' scores whatever width
# remains, while the time saved counts in every layer the group feeds, so without a floor it
# starved residual streams first (resnet56 at 2x kept 1 of 16 stage-1 channels and lost 19 pt
# after fine-tuning). Torch-Pruning's ``max_pruning_ratio`` plays the same role.
MIN_KEEP_FRACTION = 0.25
# When every group at that floor is still slower than the budget, the floor is lowered step by
# step to the first that reaches it (a time target is the user's explicit demand, the floor only
# a guard for accuracy); the report names the floor the plan needed. Never below 1/16: where
# per-op overhead dominates, the floor's last step, one channel per group, "reached" 3x on
# vgg_small at batch 1 by removing 358x of its MACs, a model no fine-tuning recovers; the
# report says the target is out of reach instead.
RELAXED_FRACTIONS = (1 / 8, 1 / 16)


@dataclass
class Allocation:
    counts: dict[str, int]
    predicted_ms: float
    value: float
    starts: list[dict[str, Any]] = field(default_factory=list)  # each start, refined
    note: str | None = None
    min_fraction: float = MIN_KEEP_FRACTION
    removed: list[str] = field(default_factory=list)  # blocks removed whole (BlockOption.name)


def candidate_widths(size: int, round_to: int, floor: int) -> list[int]:
    """Grid widths that are multiples of ``round_to`` (and the full size), at least ``floor``."""
    base = [w for w in grid(size) if w % round_to == 0 or w == size]
    if len(base) < 2 and size > round_to:  # round_to coarser than the grid: its own multiples
        base = [*range(round_to, size, round_to), size]
    return [w for w in base if w >= floor] or [size]


def value_curve(score: torch.Tensor) -> torch.Tensor:
    """``curve[k-1]``: importance kept with the ``k`` best indices."""
    return torch.cumsum(torch.sort(score.to(torch.float64), descending=True).values, 0)


class KnapsackState:
    """Current widths and removed blocks with the exact predicted time, updated incrementally
    per group: each layer's cost is its scaled time plus its output's share of the remainder
    that scales with activation size (a removed block's layers cost nothing)."""

    def __init__(
        self,
        table: LatencyTable,
        counts: dict[str, int],
        blocks: tuple[BlockOption, ...] = (),
        gone: frozenset[str] | set[str] = frozenset(),
        costs: dict[tuple[int, int, int], float] | None = None,
    ):
        self.table = table
        self.counts = dict(counts)
        self.touch: dict[str, list[int]] = {}
        for i, layer in enumerate(table.layers):
            for g in layer.groups:
                self.touch.setdefault(g, []).append(i)
        self.blocks = {b.name: b for b in blocks}
        self.block_of = {i: b.name for b in blocks for i in b.layers}
        self.owner = {g: b.name for b in blocks for g in b.groups}
        self.gone: set[str] = set(gone)
        self.per_act = table.remainder_var / max(table.act_total, 1.0)  # for share_cost
        # layer index and widths -> cost: the solver's hottest call, asked for the same widths
        # many times; shared by the states of one problem (the table does not change meanwhile)
        self._costs = {} if costs is None else costs
        self.layer_t = [self._cost(i, self.counts) for i in range(len(table.layers))]

    def _cost(self, i: int, counts: dict[str, int]) -> float:
        if self.block_of.get(i) in self.gone:
            return 0.0
        layer, sizes = self.table.layers[i], self.table.sizes
        key = (i, layer.cin.width(counts, sizes), layer.cout.width(counts, sizes))
        cost = self._costs.get(key)
        if cost is None:
            cost = self._costs[key] = self.table.layer_cost_at(layer, key[1], key[2])
        return cost

    def total(self) -> float:
        gone_fixed = sum(self.blocks[b].fixed_ms for b in self.gone)
        return sum(self.layer_t) + self.table.remainder_fixed - gone_fixed

    def active(self, gid: str) -> bool:
        """Whether ``gid``'s width still matters (its block, if any, is kept)."""
        return self.owner.get(gid) not in self.gone

    def delta(self, gid: str, width: int) -> float:
        """Exact change of the predicted total if ``gid`` moved to ``width`` (tried in place:
        the solver's hottest loop, so no copy of the counts)."""
        was = self.counts[gid]
        self.counts[gid] = width
        try:
            return sum(
                self._cost(i, self.counts) - self.layer_t[i] for i in self.touch.get(gid, [])
            )
        finally:
            self.counts[gid] = was

    def share_cost(self, gid: str, width: int) -> float:
        """Linearised cost of ``gid`` at ``width``: equal shares of the time of its layers,
        others fixed, and the activations it sets."""
        t = self.table
        was = self.counts[gid]
        self.counts[gid] = width
        try:
            c = 0.0
            for i in self.touch.get(gid, []):
                layer = t.layers[i]
                c += t.scale * layer.time_at(self.counts, t.sizes) / len(layer.groups)
                c += self.per_act * layer.cout.terms.get(gid, 0.0) * width * layer.out_numel
            return c
        finally:
            self.counts[gid] = was

    def move(self, gid: str, width: int) -> None:
        self.counts[gid] = width
        for i in self.touch.get(gid, []):
            self.layer_t[i] = self._cost(i, self.counts)

    def toggle_delta(self, name: str) -> float:
        """Exact change of the predicted total if block ``name`` were removed (kept, if it is
        removed now)."""
        block = self.blocks[name]
        if name in self.gone:
            self.gone.discard(name)
            try:
                return sum(self._cost(i, self.counts) for i in block.layers) + block.fixed_ms
            finally:
                self.gone.add(name)
        return -sum(self.layer_t[i] for i in block.layers) - block.fixed_ms

    def toggle(self, name: str) -> None:
        """Remove block ``name`` (its groups back to whole: a removed block has no width, and
        one kept back starts whole), or keep it if it is removed."""
        if name in self.gone:
            self.gone.discard(name)
        else:
            for g in self.blocks[name].groups:
                self.move(g, self.table.sizes[g])
            self.gone.add(name)
        for i in self.blocks[name].layers:
            self.layer_t[i] = self._cost(i, self.counts)


@dataclass
class _Problem:
    """One allocation as every start reads it: the free groups, their candidate widths and
    value curves (``val[g][k - 1]``: value of keeping ``k``), the budget, and the widths of
    the groups not being chosen (``whole``: every group's size, fixed counts over it)."""

    table: LatencyTable
    free: list[str]
    cands: dict[str, list[int]]
    val: dict[str, list[float]]
    budget: float
    whole: dict[str, int]
    blocks: tuple[BlockOption, ...] = ()
    costs: dict[tuple[int, int, int], float] = field(default_factory=dict)  # see KnapsackState

    def value_of(self, state: KnapsackState) -> float:
        return _kept_value(state, self.free, self.val)

    def state(self, counts: dict[str, int], gone: frozenset[str] = frozenset()) -> KnapsackState:
        return KnapsackState(self.table, counts, self.blocks, gone, self.costs)


def _kept_value(state: KnapsackState, free: list[str], val: dict[str, list[float]]) -> float:
    """The objective: every free group's value at its width, a removed block's groups
    counting ``1 - weight`` of their whole value (the identity path keeps the rest)."""
    kept = sum(val[g][state.counts[g] - 1] for g in free if state.active(g))
    return kept + sum((1 - state.blocks[b].weight) * _whole(state, b, val) for b in state.gone)


def _whole(state: KnapsackState, name: str, val: dict[str, list[float]]) -> float:
    return sum(val[g][-1] for g in state.blocks[name].groups if g in val)


def _toggle_gain(state: KnapsackState, name: str, val: dict[str, list[float]]) -> float:
    """Change of the objective if block ``name`` were removed (kept back, if removed now):
    removing it loses its groups' kept value and keeps ``1 - weight`` of their whole value, so
    a block cut narrow can lose less by going whole; kept back, it returns whole."""
    block = state.blocks[name]
    if name in state.gone:
        return block.weight * _whole(state, name, val)
    kept = sum(val[g][state.counts[g] - 1] for g in block.groups if g in val)
    return (1 - block.weight) * _whole(state, name, val) - kept


def allocate(
    table: LatencyTable,
    values: dict[str, torch.Tensor],
    budget_ms: float,
    *,
    round_to: int = 1,
    fixed: dict[str, int] | None = None,
    min_fraction: float = MIN_KEEP_FRACTION,
    blocks: tuple[BlockOption, ...] = (),
) -> Allocation:
    """Counts per group (the keys of ``values``) with predicted time <= ``budget_ms`` and the
    most kept value; ``fixed`` groups keep the given counts (their time still counts); every
    free group keeps at least ``min_fraction`` of its indices (and ``round_to``). ``blocks``:
    residual blocks the plan may also remove whole, on the same value scale (a removed block
    keeps ``1 - weight`` of its groups' whole value); none whose groups include a fixed one."""
    fixed = fixed or {}
    sizes = table.sizes
    free = [g for g in values if g not in fixed]
    floor = {g: min_keep(sizes[g], round_to, min_fraction) for g in free}
    cands = {g: candidate_widths(sizes[g], round_to, floor[g]) for g in free}
    val = {g: values[g].tolist() for g in free}
    blocks = tuple(b for b in blocks if not set(b.groups) & set(fixed))
    problem = _Problem(table, free, cands, val, budget_ms, {**sizes, **fixed}, blocks)
    starts = {
        "knapsack": (_knapsack_start(problem), frozenset()),
        "lagrangian": _lagrangian_start(problem),
        "uniform": (_best_uniform(problem), frozenset()),
    }
    best: tuple[bool, float] | None = None
    tried: list[dict[str, Any]] = []
    for name, (counts, gone) in starts.items():
        if counts is None:  # no uniform fraction fits
            continue
        state = problem.state(counts, gone)
        _repair(state, free, cands, val, budget_ms)
        _exchange(state, free, cands, val, budget_ms)
        total, value = state.total(), problem.value_of(state)
        tried.append({"start": name, "predicted_ms": total, "value": value})
        if blocks:
            tried[-1]["removed"] = len(state.gone)
        fits = total <= budget_ms * (1 + 1e-9)
        rank = (fits, value if fits else -total)  # else the fastest: the note says how far
        if best is None or rank > best:
            best, chosen = rank, state
    assert best is not None  # the knapsack and Lagrangian starts always give widths
    counts = {g: chosen.counts[g] for g in values}
    total = chosen.total()
    note = None if best[0] else _unreachable(total, budget_ms)
    removed = [b.name for b in blocks if b.name in chosen.gone]
    return Allocation(counts, total, problem.value_of(chosen), tried, note, min_fraction, removed)


def _knapsack_start(p: _Problem) -> dict[str, int]:
    """The multiple-choice knapsack over each group's fast ends, its costs linearised at the
    whole widths (each group charged an equal share of the layers it touches). The shares
    under-count what cutting both widths of a layer saves, so this start tends to cut deeper
    than the budget needs; the repair grows it back by exact cost."""
    free, cands, val, budget, whole = p.free, p.cands, p.val, p.budget, p.whole
    state = p.state(whole)
    opts_w, opts_v, opts_c = [], [], []
    for g in free:
        ws = cands[g]
        cs = [state.share_cost(g, w) for w in ws]
        keep = fast_end(ws, cs)
        opts_w.append([ws[i] for i in keep])
        opts_v.append([val[g][ws[i] - 1] for i in keep])
        opts_c.append([cs[i] for i in keep])
    const = state.total() - sum(state.share_cost(g, whole[g]) for g in free)
    picks = mckp(opts_v, opts_c, budget - const)
    if picks is None:  # nothing fits even linearised: the cheapest option of every group
        picks = [min(range(len(c)), key=c.__getitem__) for c in opts_c]
    return {**whole, **{g: ws[j] for g, ws, j in zip(free, opts_w, picks, strict=True)}}


LAGRANGE_STEPS = 16
"""Bisection steps on the price of a millisecond (its bracket is first found by doubling)."""
SWEEPS = 6
"""Coordinate-ascent passes over the groups at one price (most settle in two or three)."""
STILL = 8
"""Doublings of the price that leave every width as it was before the target counts as out of
reach (a cut waits for its price: one doubling that moves nothing says little)."""


def _lagrangian_start(p: _Problem) -> tuple[dict[str, int], frozenset[str]]:
    """The knapsack's Lagrangian relaxation with exact costs: at a price ``lam`` per ms, every
    group in turn takes the width that maximises its value minus ``lam`` times the exact change
    of the predicted time, the other groups at their current widths (coordinate ascent, which
    sees that cutting a layer's input and output together saves their product), and every
    block is removed or kept by the same rule. The price is bisected to the lowest one whose
    widths fit. The linearised knapsack alone, re-solved in rounds with its budget corrected by
    each round's exact error (before 2026-12-02), swung between widths far under and far over
    the budget. Returns the widths and the blocks removed."""
    free, cands, val, budget, whole = p.free, p.cands, p.val, p.budget, p.whole

    def solve(lam: float) -> KnapsackState:
        state = p.state(whole)
        for _ in range(SWEEPS):
            moved = False
            for g in free:
                if not state.active(g):
                    continue
                here = state.counts[g]
                pick, score = here, val[g][here - 1]
                for w in cands[g]:
                    if w != here:
                        gain = val[g][w - 1] - lam * state.delta(g, w)
                        if gain > score + 1e-12:
                            pick, score = w, gain
                if pick != here:
                    state.move(g, pick)
                    moved = True
            for b in p.blocks:
                if _toggle_gain(state, b.name, val) - lam * state.toggle_delta(b.name) > 1e-12:
                    state.toggle(b.name)
                    moved = True
            if not moved:
                break
        return state

    lo, hi = 0.0, max(sum(v[-1] for v in val.values()), 1e-9) / max(budget, 1e-9)
    state, still = solve(hi), 0
    while state.total() > budget:  # double the price until the widths fit
        lo, hi = hi, 2 * hi
        state, before = solve(hi), state
        same = (state.counts, state.gone) == (before.counts, before.gone)
        still = still + 1 if same else 0
        if still == STILL:
            return dict(state.counts), frozenset(state.gone)  # out of reach: the fastest found
    best = state
    for _ in range(LAGRANGE_STEPS):
        mid = (lo + hi) / 2
        state = solve(mid)
        if state.total() <= budget:
            hi, best = mid, state
        else:
            lo = mid
    return dict(best.counts), frozenset(best.gone)


def _unreachable(predicted_ms: float, budget_ms: float) -> str:
    return (
        f"the time target is unreachable: the smallest widths predict {predicted_ms:.3f} ms for "
        f"a {budget_ms:.3f} ms budget"
    )


def allocate_reaching(
    table: LatencyTable,
    values: dict[str, torch.Tensor],
    budget_ms: float,
    *,
    correction: float = 1.0,
    **options: Any,
) -> Allocation:
    """:func:`allocate` (``options``: its keywords but ``min_fraction``) with the default floor,
    or with the first of ``RELAXED_FRACTIONS`` that reaches the budget. When none does, the
    default floor's allocation (the fastest at that floor, its note saying so): a target out of
    reach does not take the model down with it. ``correction``: measured over table-predicted
    time near the plan (:func:`~netslim.structural.latency_checks.local_correction`); the
    knapsack aims at the budget divided by it, and the note quotes the user's budget against
    the corrected prediction."""
    first = None
    for fraction in (MIN_KEEP_FRACTION, *RELAXED_FRACTIONS):
        alloc = allocate(table, values, budget_ms / correction, min_fraction=fraction, **options)
        if alloc.note is None:
            return alloc
        first = first or alloc
    assert first is not None
    first.note = _unreachable(first.predicted_ms * correction, budget_ms) + (
        f"; with every group down to 1/{round(1 / RELAXED_FRACTIONS[-1])} of its channels it is "
        f"still out of reach, so the plan keeps the floor of 1/{round(1 / MIN_KEEP_FRACTION)}"
    )
    return first


def _best_uniform(p: _Problem) -> dict[str, int] | None:
    """The largest single fraction of every group (each on its own fast-end grid) that fits:
    a start as good as uniform pruning by construction."""
    table, free, cands = p.table, p.free, p.cands
    lo, hi, best = 0.0, 1.0, None
    for _ in range(20):
        mid = (lo + hi) / 2
        counts = dict(p.whole)
        for g in free:
            fitting = [w for w in cands[g] if w <= max(1, table.sizes[g] * mid)]
            counts[g] = fitting[-1] if fitting else cands[g][0]
        if table.predict(counts) <= p.budget:
            best, lo = counts, mid
        else:
            hi = mid
    return best


def _exchange(
    state: KnapsackState,
    free: list[str],
    cands: dict[str, list[int]],
    val: dict[str, list[float]],
    budget: float,
    passes: int = 4,
) -> None:
    """Local search by exact cost: narrow one group by a step, or remove a block or keep one
    back, and refill (or cut) greedily; keep the exchange when the kept value grows (escapes
    where a start got stuck, such as the wrong one of two blocks removed)."""

    def value() -> float:
        return _kept_value(state, free, val)

    for _ in range(passes):
        improved = False
        for moves in _exchange_moves(state, free, cands, val):
            if len(moves) == 2 and (moves[0][0] not in state.gone or moves[1][0] in state.gone):
                continue  # a swap of blocks an earlier exchange moved
            before = value()
            saved, gone = dict(state.counts), set(state.gone)
            for key, width in moves:
                _apply(state, key, width)
            held = {k for k, w in moves if w is None}  # the blocks moved stay as moved
            _repair(state, [h for h in free if h != moves[0][0]], cands, val, budget, held)
            if value() > before + 1e-12 and state.total() <= budget:
                improved = True
                continue
            for b in state.gone ^ gone:  # undo
                state.toggle(b)
            for h, w in saved.items():
                if state.counts[h] != w:
                    state.move(h, w)
        if not improved:
            return


def _exchange_moves(
    state: KnapsackState, free: list[str], cands: dict[str, list[int]], val: dict[str, list[float]]
) -> Iterator[list[tuple[str, int | None]]]:
    """The exchanges to try from ``state`` as it is when each is reached (a generator: the
    exchanges before it may have moved it): each active group one step narrower, each block
    removed or kept back, and each removed block swapped for a kept one."""
    for g in free:
        smaller = _next_cut(state, g, cands[g]) if state.active(g) else None
        if smaller is not None:
            yield [(g, smaller)]
    for b in list(state.blocks):
        yield [(b, None)]
    kept = [b for b in state.blocks if b not in state.gone]
    rivals = sorted(kept, key=lambda c: -_toggle_gain(state, c, val) / _saves(state, c))
    for b, c in [(b, c) for b in list(state.gone) for c in rivals[:SWAP_RIVALS]]:
        yield [(b, None), (c, None)]


SWAP_RIVALS = 2
"""Kept blocks each removed block is tried in exchange for: those whose removal loses the
least value per ms saved. With every pair, a resnet56 plan (25 blocks) took minutes to solve
(the first run of bench/_latency_blocks_accuracy.py, by its progress); with two, 0.4-1.1 s."""


def _saves(state: KnapsackState, name: str) -> float:
    return max(-state.toggle_delta(name), 1e-12)


def _next_cut(state: KnapsackState, gid: str, widths: list[int]) -> int | None:
    """The widest of ``widths`` below ``gid``'s current width that saves time: one step down
    inside a staircase's flat part saves nothing, and a search that only looked one step down
    stopped there, over the budget, with faster widths a few steps further."""
    for w in reversed(widths):
        if w < state.counts[gid] and state.delta(gid, w) < 0:
            return w
    return None


def _repair(
    state: KnapsackState,
    free: list[str],
    cands: dict[str, list[int]],
    val: dict[str, list[float]],
    budget: float,
    held: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Cut widths or remove blocks (least value lost per ms saved) until the exact prediction
    fits, then grow widths or keep removed blocks back (most value per ms) while it still
    fits. A removed block's groups keep their widths, out of play until it is back; blocks
    ``held`` stay as they are."""

    def neighbour(g: str, up: bool) -> int | None:
        ws = cands[g]
        cur = state.counts[g]
        if up:
            bigger = [w for w in ws if w > cur]
            return bigger[0] if bigger else None
        return _next_cut(state, g, cands[g])

    total = state.total()
    while total > budget:
        best = None
        for g in free:
            w = neighbour(g, up=False) if state.active(g) else None
            if w is None:
                continue
            saved = -state.delta(g, w)
            lost = val[g][state.counts[g] - 1] - val[g][w - 1]
            ratio = lost / saved
            if best is None or ratio < best[0]:
                best = (ratio, g, w)
        for b in state.blocks:
            saved = 0.0 if b in state.gone or b in held else -state.toggle_delta(b)
            if saved > 0:
                ratio = -_toggle_gain(state, b, val) / saved
                if best is None or ratio < best[0]:
                    best = (ratio, b, None)
        if best is None:
            return
        _apply(state, best[1], best[2])
        total = state.total()
    while True:
        best = None
        for g in free:
            w = neighbour(g, up=True) if state.active(g) else None
            while w is not None:
                cost = state.delta(g, w)
                if total + cost <= budget:
                    gain = val[g][w - 1] - val[g][state.counts[g] - 1]
                    ratio = gain / max(cost, 1e-9)
                    if best is None or ratio > best[0]:
                        best = (ratio, g, w)
                    break
                w = None  # the next step does not fit; larger ones cost more
        for b in state.gone - held:
            cost = state.toggle_delta(b)
            if total + cost <= budget:
                ratio = _toggle_gain(state, b, val) / max(cost, 1e-9)
                if best is None or ratio > best[0]:
                    best = (ratio, b, None)
        if best is None:
            return
        _apply(state, best[1], best[2])
        total = state.total()


def _apply(state: KnapsackState, key: str, width: int | None) -> None:
    """One solver move: ``key`` to ``width``, or block ``key`` removed / kept back (None)."""
    if width is None:
        state.toggle(key)
    else:
        state.move(key, width)
