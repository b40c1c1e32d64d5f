"""Multiple-choice knapsack and staircase helpers for allocation under a time budget.

Every group picks one kept width; each width has a value (kept importance) and a cost (time).
Latency on real hardware is a staircase in the width (vector lanes, register tiles, cache
lines): widths in the middle of a step cost as much as the step's right end while keeping less,
so only the *fast end* of each step is worth offering to the solver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def fast_end(widths: Sequence[int], costs: Sequence[float], tol: float = 0.0) -> list[int]:
    """Indices of the widths at the right (fast) end of each cost step, ascending.

    Width ``w`` is kept when every larger width costs more than ``cost(w) * (1 + tol)``: a
    larger width for (about) the same time is always the better buy. ``tol`` absorbs timing
    noise (a step that is flat within ``tol`` counts as flat)."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    keep = []
    best_above = math.inf  # cheapest cost among the larger widths seen so far
    for i in reversed(order):
        if costs[i] * (1 + tol) < best_above:
            keep.append(i)
        best_above = min(best_above, costs[i])
    return sorted(keep, key=lambda i: widths[i])


def staircase_steps(widths: Sequence[int], costs: Sequence[float], tol: float = 0.02) -> list[int]:
    """Widths where the cost jumps up by more than ``tol`` (relative) from the previous width:
    the left edges of the steps, for plots and reports."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    out = []
    for a, b in zip(order, order[1:], strict=False):
        if costs[b] > costs[a] * (1 + tol):
            out.append(widths[b])
    return out


def mckp(
    values: Sequence[Sequence[float]],
    costs: Sequence[Sequence[float]],
    budget: float,
    *,
    bins: int = 4000,
    unit: float | None = None,
) -> list[int] | None:
    """Choose one option per item maximising total value with total cost <= ``budget``.

    Dynamic programming over the cost axis cut into ``bins`` steps (or steps of ``unit``);
    each option's cost is rounded *up* to a step, so a returned choice always fits the real
    budget (it may miss a better one by at most one step per item). None: nothing fits.
    Returns the index of the chosen option for every item."""
    n = len(values)
    if n == 0:
        return []
    base = [min(c) for c in costs]
    room = budget - sum(base)
    if room < -1e-12:
        return None
    if unit is None:
        unit = max(room, 1e-12) / bins
    size = int(math.floor(room / unit + 1e-9))
    dp = np.full(size + 1, -np.inf)
    dp[0] = 0.0
    choice = np.full((n, size + 1), -1, dtype=np.int32)
    steps = []
    for i in range(n):
        cint = [int(math.ceil((c - base[i]) / unit - 1e-9)) for c in costs[i]]
        steps.append(cint)
        new = np.full(size + 1, -np.inf)
        arg = np.full(size + 1, -1, dtype=np.int32)
        for j, (v, c) in enumerate(zip(values[i], cint, strict=True)):
            if c > size:
                continue
            cand = np.full(size + 1, -np.inf)
            cand[c:] = dp[: size + 1 - c] + v
            better = cand > new
            new[better] = cand[better]
            arg[better] = j
        dp = new
        choice[i] = arg
    if not np.isfinite(dp).any():
        return None
    b = int(np.argmax(dp))
    picks = [0] * n
    for i in reversed(range(n)):
        j = int(choice[i, b])
        picks[i] = j
        b -= steps[i][j]
    return picks
