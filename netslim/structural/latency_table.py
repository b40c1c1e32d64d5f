"""A latency table of a model on a target: the time of every conv/linear layer as a function of
the kept widths of the groups that set its input and output widths, and what the rest of the
model costs; it predicts the whole model's time at any widths. Measured (or read from the
cache) by :mod:`~netslim.structural.latency_measure`, fitted to whole-model timings by
:mod:`~netslim.structural.latency_fit`.

A layer's lines are its times at a grid of widths (a power-of-two step, at most ~32 points a
line, so multiples of 8 on layers up to 256 wide: fine enough to show the staircases that
vector widths and tiles cause), input width varied at full output width and output width
varied at full input width, plus the corner where both are smallest. A layer whose two widths
both shrink is predicted as ``o + (x - o)(y - o)/(T - o)``: the time above a fixed overhead
``o`` is the product of the two lines' relative times (GEMM-like work is in × out), ``o``
solved from the corner.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netslim.structural.op_timing import OpShape, Target

MAX_POINTS = 32


def grid(size: int, multiple: int = 1) -> list[int]:
    """Widths measured for a dim of ``size``: a power-of-two step (times ``multiple``) with at
    most about ``MAX_POINTS`` points, and ``size`` itself."""
    units = max(1, size // multiple)
    step = 1
    while units / step > MAX_POINTS:
        step *= 2
    widths = {w * multiple for w in range(step, units + 1, step)}
    widths.add(size)
    return sorted(widths)


def lookup(line: dict[int, float], width: int) -> float:
    """Time at ``width`` from a measured line: the smallest measured width >= ``width`` (a width
    inside a step costs what the step's right end costs)."""
    widths = sorted(line)
    i = bisect.bisect_left(widths, width)
    return line[widths[min(i, len(widths) - 1)]]


@dataclass
class Dim:
    """A layer width as an affine function of group kept counts: ``fixed + sum(mult * kept)``."""

    full: int
    fixed: int
    terms: dict[str, float] = field(default_factory=dict)

    def width(self, kept: dict[str, int], sizes: dict[str, int]) -> int:
        terms = self.terms
        if not self.fixed and len(terms) == 1:  # the common case: one group sets it, fast path
            ((g, m),) = terms.items()
            if m == 1:
                k = kept.get(g)
                return max(1, sizes[g] if k is None else k)
        w: float = self.fixed
        for g, m in terms.items():  # a loop, not sum(): the knapsack calls this ~1e5 times
            k = kept.get(g)
            w += m * (sizes[g] if k is None else k)
        return max(1, int(round(w)))


@dataclass
class Layer:
    """One conv/linear call of the model with its measured lines."""

    name: str
    op: OpShape
    cin: Dim
    cout: Dim
    depthwise: bool
    out_numel: int  # output elements per output channel (batch x spatial / tokens)
    in_line: dict[int, float] = field(default_factory=dict)
    out_line: dict[int, float] = field(default_factory=dict)
    full_ms: float = 0.0
    overhead: float = 0.0
    inside: tuple[tuple[float, float], ...] = ()  # (isolated ms, in-model / isolated), sorted
    _memo: dict[tuple[int, int], float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def groups(self) -> set[str]:
        return set(self.cin.terms) | set(self.cout.terms)

    def forget_predictions(self) -> None:
        """Drop the memoised times: call after its lines or in-model factors change."""
        self._memo.clear()

    def time(self, cin: int, cout: int) -> float:
        """Predicted ms at these widths (memoised: the knapsack asks for the same pairs many
        times; the lines are filled before the first call and never change after)."""
        key = (cin, cout)
        if key not in self._memo:
            self._memo[key] = self._time(cin, cout)
        return self._memo[key]

    def _time(self, cin: int, cout: int) -> float:
        alone = self._alone(cin, cout)
        return alone * inside_factor(self.inside, alone) if self.inside else alone

    def _alone(self, cin: int, cout: int) -> float:
        """Time at these widths as timed in isolation (the measured lines)."""
        if self.depthwise:
            return lookup(self.out_line, cout) if self.out_line else self.full_ms
        x = lookup(self.in_line, cin) if self.in_line else self.full_ms
        y = lookup(self.out_line, cout) if self.out_line else self.full_ms
        if not self.in_line or not self.out_line:
            return min(x, y)  # one side is fixed: its line is the full time
        o, top = self.overhead, self.full_ms
        if top - o <= 1e-12:
            return top
        return o + (x - o) * (y - o) / (top - o)

    def time_at(self, kept: dict[str, int], sizes: dict[str, int]) -> float:
        return self.time(self.cin.width(kept, sizes), self.cout.width(kept, sizes))


def inside_factor(points: tuple[tuple[float, float], ...], alone: float) -> float:
    """In-model over isolated time for a layer whose isolated time is ``alone``: linear between
    the calibration points' (isolated ms, factor), the nearest point's factor outside them."""
    if alone <= points[0][0]:
        return points[0][1]
    for (x0, r0), (x1, r1) in zip(points, points[1:], strict=False):
        if alone <= x1:
            return r0 + (r1 - r0) * (alone - x0) / max(x1 - x0, 1e-12)
    return points[-1][1]


@dataclass
class LatencyTable:
    """Layers with measured lines plus the fitted remainder; predicts whole-model time."""

    target: Target
    layers: list[Layer]
    sizes: dict[str, int]
    scale: float = 1.0  # in-model / isolated layer time
    remainder_fixed: float = 0.0
    remainder_var: float = 0.0  # ms at every layer output at full size
    dense_ms: float = 0.0  # measured dense model
    act_total: float = 1.0
    build_s: float = 0.0
    measured_points: int = 0
    lines_cached: bool = False  # every layer's lines came from the cache, none measured now
    calibration: dict[str, Any] = field(default_factory=dict)
    page_faults: int | None = None  # of one dense forward (None: not counted)
    block_fixed_ms: float | None = None  # non-layer ms a bypassed block's layer takes with it
    measure_kept: Callable[..., float] | None = None  # set by build_table (kept, confirm)

    def act_weight(self, gid: str) -> float:
        """Output elements one kept index of ``gid`` carries, summed over layers."""
        return sum(layer.cout.terms.get(gid, 0.0) * layer.out_numel for layer in self.layers) / max(
            self.act_total, 1.0
        )

    def layer_ms(self, kept: dict[str, int]) -> float:
        """Sum of the isolated layer times (before ``scale``)."""
        return sum(layer.time_at(kept, self.sizes) for layer in self.layers)

    def layers_inside(self, blocks: tuple[str, ...]) -> set[int]:
        """Indices of the layers inside any of the modules named ``blocks``."""
        prefixes = tuple(b + "." for b in blocks)
        return {i for i, la in enumerate(self.layers) if la.name.startswith(prefixes)}

    def layer_cost(self, layer: Layer, kept: dict[str, int]) -> float:
        """Predicted ms of ``layer`` in the model: its scaled time and its output's share of
        the remainder that scales with activation size."""
        cin, cout = layer.cin.width(kept, self.sizes), layer.cout.width(kept, self.sizes)
        return self.layer_cost_at(layer, cin, cout)

    def layer_cost_at(self, layer: Layer, cin: int, cout: int) -> float:
        """:meth:`layer_cost` at these input and output widths."""
        per_act = self.remainder_var / max(self.act_total, 1.0)
        return self.scale * layer.time(cin, cout) + per_act * cout * layer.out_numel

    def act_fraction(self, kept: dict[str, int]) -> float:
        total = sum(layer.cout.width(kept, self.sizes) * layer.out_numel for layer in self.layers)
        return total / max(self.act_total, 1.0)

    def predict(self, kept: dict[str, int] | None = None) -> float:
        """Predicted whole-model ms with ``kept`` (group id -> kept count; others full)."""
        kept = kept or {}
        return (
            self.scale * self.layer_ms(kept)
            + self.remainder_fixed
            + self.remainder_var * self.act_fraction(kept)
        )

    def lines(self) -> dict[str, dict[str, dict[int, float]]]:
        """Per layer: its measured lines (for plots)."""
        return {
            layer.name: {"in": dict(layer.in_line), "out": dict(layer.out_line)}
            for layer in self.layers
        }
