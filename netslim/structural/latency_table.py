"""A latency table of a model on a target: the time of every conv/linear layer as a function of
the kept widths of the groups that set its input and output widths. ``nn.MultiheadAttention``'s
projections count as linear layers: it runs them functionally, and on ViT-B/16 they are a third
of the linear work, their widths set by the residual stream's group.

How it is measured: each layer is timed *in isolation* with the model's own geometry (kernel,
stride, input spatial size / tokens, batch) along two lines, input width varied at full output
width and output width varied at full input width, on a grid of widths fine enough to show the
staircases (a power-of-two step, at most ~32 points a line, so multiples of 8 on layers up to 256
wide), plus the corner where both are smallest. A layer whose two widths both shrink is predicted
as ``o + (x - o)(y - o)/(T - o)``: the time above a fixed overhead ``o`` is the product of the
two lines' relative times (GEMM-like work is in × out), ``o`` solved from the corner. Inside
the model a layer runs slower than alone (its weights and input cold): with torch eager each
layer is also timed inside the dense model and the two calibration copies (forward hooks), and
its in-model / isolated factor is read between those points by its isolated time
(``fit_inside``).

What is not a conv or linear (norms, activations, adds, pooling, attention's softmax) is the
*remainder*: the dense model's measured time minus the predicted layer sum, split into a fixed
part and a part proportional to the layer outputs' total size, fitted together with a scale on
the layer sum (1 when every layer was timed inside the model) on whole-model measurements:
dense, every group at about half width and at about an eighth, and every plan checked earlier on
the same model and target (a plan's widths are not uniform; its check is the best evidence of
how such widths run). When a plan may remove residual blocks whole, one more point times the
model with all of them out: what that saves beyond their layers is the time of their other
ops, credited per layer to each block removed (``fit_block_fixed``). Whole-model times are
cached with the points, keyed by the model's layer list, and so is the dense model's count of
page faults a forward (torch eager): an allocator that hands freed activations back to the
kernel can take half a model's time (``netslim.retain_freed_memory``).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netslim.measure._call import call, inference
from netslim.structural import op_timing
from netslim.structural.groups import Analysis, Group
from netslim.structural.op_timing import CachedTimer, OpShape, Target

MAX_POINTS = 32
CALIBRATION = ("dense", "half", "small")
"""The whole-model points every table measures; any other point is a plan's check."""
CHECK_WEIGHT = 3.0
"""A plan check's weight in the remainder fit against a calibration point's: plans do not keep
uniform widths, and a check is the evidence of how the widths plans choose run."""
CONFIRM_TIMINGS = 3
"""Paired timings behind a check found far off its prediction (their median). On a shared host
one timing can be far off: in run 23:44 of 2026-12-01, vgg_small (ONNX Runtime, 2 threads,
batch 16) returned for its 3x target a 2x plan's cached check of 0.73 ms against 1.21 ms
predicted, and two copies of those widths timed in the same rounds then ran 0.88 and 1.62 ms."""


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


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Call:
    """One conv/linear product the model runs: its module, the weight that sets its widths
    (dim 1 in, dim 0 out), its input and output shapes; for a linear product its (in, out)
    features (the weight's shape: attention modules' projections have no ``nn.Linear``)."""

    name: str
    module: nn.Module
    weight: str
    ishape: tuple[int, ...]
    oshape: tuple[int, ...]
    features: tuple[int, int] | None = None  # None: a conv
    bias: bool = False


def _projections(name: str, mha: nn.MultiheadAttention, args: tuple, kwargs: dict) -> list[Call]:
    """``nn.MultiheadAttention`` runs its projections functionally (no ``nn.Linear`` call to
    hook): one linear product per projection weight, over the query's or the key's tokens."""
    q = args[0] if args else kwargs.get("query")
    k = args[1] if len(args) > 1 else kwargs.get("key", q)
    if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor):
        return []

    def rows(x: torch.Tensor) -> tuple[int, ...]:
        if x.dim() == 2:  # unbatched (L, E)
            return (1, x.shape[0])
        return (x.shape[0], x.shape[1]) if mha.batch_first else (x.shape[1], x.shape[0])

    prefix = f"{name}." if name else ""
    proj = (
        [("in_proj_weight", q)]
        if mha._qkv_same_embed_dim
        else [("q_proj_weight", q), ("k_proj_weight", k), ("v_proj_weight", k)]
    )
    calls = []
    for wname, x, bias in (
        *((w, x, mha.in_proj_bias is not None) for w, x in proj),
        ("out_proj.weight", q, mha.out_proj.bias is not None),
    ):
        w = mha.get_parameter(wname)
        fin, fout, lead = int(w.shape[1]), int(w.shape[0]), rows(x)
        label = wname.removesuffix("_weight").removesuffix(".weight")
        calls.append(
            Call(
                prefix + label, mha, prefix + wname, (*lead, fin), (*lead, fout), (fin, fout), bias
            )
        )
    return calls


def _record_calls(model: nn.Module, example_inputs: Any) -> list[Call]:
    """Every conv/linear product of one forward, in order (attention modules' projections
    included)."""
    calls: list[Call] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, *_CONV)):

            def hook(mod, args, out, name=name):
                if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    weight = f"{name}.weight" if name else "weight"
                    features = (
                        (mod.in_features, mod.out_features) if isinstance(mod, nn.Linear) else None
                    )
                    calls.append(
                        Call(name, mod, weight, tuple(args[0].shape), tuple(out.shape), features,
                             mod.bias is not None)
                    )  # fmt: skip

            hooks.append(m.register_forward_hook(hook))
        elif isinstance(m, nn.MultiheadAttention):

            def mha_hook(mod, args, kwargs, out, name=name):
                calls.extend(_projections(name, mod, args, kwargs))

            hooks.append(m.register_forward_hook(mha_hook, with_kwargs=True))
    try:
        with inference(model):
            call(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _dim(
    analysis: Analysis, owners: dict[tuple[str, int], list[tuple[Group, torch.Tensor]]],
    name: str, dim: int,
) -> Dim:  # fmt: skip
    t = analysis.tensors.get(name)
    full = int(t.shape[dim]) if t is not None else 0
    covered = 0
    terms: dict[str, float] = {}
    for g, index in owners.get((name, dim), []):
        n = int((index >= 0).sum())
        if n:
            terms[g.id] = terms.get(g.id, 0.0) + n / g.size
            covered += n
    return Dim(full=full, fixed=max(0, full - covered), terms=terms)


def _owners(groups: list[Group]) -> dict[tuple[str, int], list[tuple[Group, torch.Tensor]]]:
    out: dict[tuple[str, int], list[tuple[Group, torch.Tensor]]] = {}
    for g in groups:
        for m in g.members:
            if m.is_param:
                out.setdefault((m.name, m.dim), []).append((g, m.index))
    return out


def rebatch(inputs: Any, batch: int) -> Any:
    """The example inputs with their leading (batch) dim set to ``batch``."""

    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] != batch:
            return x[:1].expand(batch, *x.shape[1:]).contiguous()
        return x

    if isinstance(inputs, dict):
        return {k: one(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(one(x) for x in inputs)
    return one(inputs)


def find_layers(
    model: nn.Module, example_inputs: Any, analysis: Analysis, groups: list[Group], batch: int
) -> list[Layer]:
    """Every conv/linear call with the groups that set its widths (shapes at ``batch``)."""
    owners = _owners(groups)
    layers = []
    for c in _record_calls(model, rebatch(example_inputs, 1)):
        m, wname, ishape, oshape = c.module, c.weight, c.ishape, c.oshape
        if c.features is not None:
            lead = ishape[1:-1]
            op = OpShape("linear", *c.features, batch, lead, bias=c.bias)
            numel = batch * math.prod(oshape[1:-1]) if len(oshape) > 1 else batch
            cin, cout = _dim(analysis, owners, wname, 1), _dim(analysis, owners, wname, 0)
            depthwise = False
        else:
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            op = OpShape(
                "conv", m.in_channels, m.out_channels, batch, tuple(ishape[2:]),
                tuple(m.kernel_size), tuple(m.stride), _padding(m), tuple(m.dilation),
                m.groups, c.bias,
            )  # fmt: skip
            numel = batch * math.prod(oshape[2:])
            cout = _dim(analysis, owners, wname, 0)
            if depthwise:
                cin = cout
            else:
                per = _dim(analysis, owners, wname, 1)
                g = m.groups
                cin = Dim(per.full * g, per.fixed * g, {k: v * g for k, v in per.terms.items()})
        layers.append(Layer(c.name, op, cin, cout, depthwise, numel))
    return layers


def _padding(m: nn.Module) -> tuple[int, ...]:
    pad = m.padding
    if isinstance(pad, str):  # "same" / "valid": the explicit pads the conv would use
        if pad == "valid":
            return (0,) * len(m.kernel_size)
        return tuple(d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation, strict=True))
    return tuple(pad)


def measure_layers(layers: list[Layer], timer: Callable[[OpShape], float]) -> None:
    """Fill every layer's lines, full time and overhead with ``timer(op) -> ms``."""
    for layer in layers:
        layer._memo.clear()  # its predictions change with its lines
        op = layer.op
        layer.full_ms = timer(op)
        if layer.depthwise:
            if layer.cout.terms:
                layer.out_line = {w: timer(op.with_widths(w, w, w)) for w in grid(op.cout)}
            continue
        mult = op.groups
        if layer.cin.terms:
            layer.in_line = {w: timer(op.with_widths(w, op.cout)) for w in grid(op.cin, mult)}
        if layer.cout.terms:
            layer.out_line = {w: timer(op.with_widths(op.cin, w)) for w in grid(op.cout, mult)}
        if layer.in_line and layer.out_line:
            a_w, b_w = min(layer.in_line), min(layer.out_line)
            a, b = layer.in_line[a_w], layer.out_line[b_w]
            c = timer(op.with_widths(a_w, b_w))
            top = layer.full_ms
            den = top + c - a - b
            o = (c * top - a * b) / den if abs(den) > 1e-12 else 0.0
            layer.overhead = min(max(o, 0.0), min(a, b, c))


def model_key(model: nn.Module, layers: list[Layer], target: Target) -> str:
    text = type(model).__name__ + ";" + ";".join(f"{la.name}={la.op.key()}" for la in layers)
    text += ";" + str(sum(p.numel() for p in model.parameters()))
    return "model|" + hashlib.sha1(text.encode()).hexdigest()[:20]


def small_widths(groups: list[Group], round_to: int = 8) -> dict[str, int]:
    """About an eighth of every group (at least ``round_to``): the overhead-dominated point."""
    return {g.id: min(g.size, max(round_to, (g.size // 8) // round_to * round_to)) for g in groups}


def half_widths(groups: list[Group], round_to: int = 8) -> dict[str, int]:
    """About half of every group, rounded up to ``round_to`` (the calibration point)."""
    out = {}
    for g in groups:
        k = int(math.ceil(g.size / 2 / round_to) * round_to) if g.size > round_to else g.size
        out[g.id] = min(g.size, max(1, k))
    return out


def build_table(
    model: nn.Module,
    example_inputs: Any,
    analysis: Analysis,
    groups: list[Group],
    target: Target,
    *,
    timer: Callable[[OpShape], float] | None = None,
    whole: Callable[[nn.Module, Any], float] | None = None,
    ratio: Callable[[nn.Module, nn.Module, Any], float] | None = None,
    pruned_copy: Callable[..., nn.Module],
    refresh: bool = False,
    blocks: tuple[str, ...] = (),
) -> LatencyTable:
    """Measure (or load from the cache) the table of ``model`` on ``target``; ``refresh``:
    measure everything again and replace the cached points; ``blocks``: residual blocks a plan
    may bypass, whose own non-layer time is then measured too (:func:`fit_block_fixed`).

    Whole-model points other than the dense one (calibration points, plan checks) are measured
    *paired* with the dense model (``op_timing.time_ratio``) and kept as that ratio times the
    dense time: the machine's speed moving between two timings would otherwise land in the fit.

    ``timer`` / ``whole`` / ``ratio``: injectable measuring functions (tests use synthetic
    clocks; an injected ``whole`` alone also serves the ratios); ``pruned_copy(kept)``: a copy
    of the model with those kept counts (the calibration point;
    ``netslim.structural.engine.pruned_copies`` makes them with the engine, which calls this)."""
    import time

    start = time.perf_counter()
    cached = CachedTimer(target, timer, refresh=refresh)
    layers = find_layers(model, example_inputs, analysis, groups, target.batch)
    sizes = {g.id: g.size for g in groups}
    measure_layers(layers, cached)
    table = LatencyTable(target, layers, sizes)
    table.act_total = sum(la.cout.full * la.out_numel for la in layers)
    inputs = rebatch(example_inputs, target.batch)
    key = model_key(model, layers, target)
    if whole is None and target.runtime == "torch":  # real timing: what the allocator costs
        table.page_faults = _faults(cached, key, model, inputs)
    if ratio is None and whole is not None:
        ratio = lambda m, ref, x: whole(m, x) / whole(ref, x)  # noqa: E731
    whole = whole or (lambda m, x: op_timing.model_ms(m, x, target))
    ratio = ratio or (lambda m, ref, x: op_timing.time_ratio(m, ref, x, target))
    make = pruned_copy
    points = dict(zip(CALIBRATION, ({}, half_widths(groups), small_widths(groups)), strict=True))
    dense_ms = _cached_whole(
        cached, f"{key}|dense", lambda: min(whole(model, inputs) for _ in range(2))
    )

    def paired(kept: dict[str, int], bypassed: tuple[str, ...] = ()) -> float:
        """ms of a copy keeping ``kept`` (and ``bypassed`` blocks out): its time ratio to the
        dense model times ``dense_ms``."""
        return dense_ms * ratio(make(kept, bypassed), model, inputs)

    copies: dict[str, nn.Module] = {"dense": model}

    def point_copy(name: str) -> nn.Module:
        """The model at calibration point ``name``, made once for its two timings."""
        if name not in copies:
            copies[name] = make(points[name])
        return copies[name]

    measured = {"dense": dense_ms}
    for name in ("half", "small"):
        measured[name] = _cached_whole(
            cached,
            f"{key}|paired|{name}",
            lambda n=name: dense_ms * ratio(point_copy(n), model, inputs),
        )
    fit_inside(
        table, {n: _cached_inside(cached, key, n, point_copy, inputs) for n in CALIBRATION}, points
    )
    copies.clear()
    checked = f"{key}|paired|plan|"
    for point, widths in cached.cache.widths.items():  # earlier plans' checks on this target
        ms = cached.cache.get(point)
        if point.startswith(checked) and ms is not None:
            name = check_name(widths)
            points[name], measured[name] = dict(widths), ms
    fit_remainder(table, measured, points)
    if blocks:
        out = f"{key}|paired|blocks-out|{check_name(dict.fromkeys(blocks, 0))}"
        out_ms = _cached_whole(cached, out, lambda: paired({}, tuple(blocks)))
        fit_block_fixed(table, blocks, out_ms)
    cached.save()
    table.build_s = time.perf_counter() - start
    table.measured_points = cached.measured

    def measure_kept(
        kept: dict[str, int], confirm: bool = False, bypassed: tuple[str, ...] = ()
    ) -> float:
        """Whole-model ms of a copy with ``kept`` counts (cached by the counts, with them: the
        next table of this model and target fits it as a calibration point) and ``bypassed``
        blocks out (cached apart: a point the fit of widths cannot read).

        ``confirm``: the caller found the check far off its prediction; one paired timing (or
        one cached from an earlier, noisier round) must not decide the plan alone, so the check
        becomes the median of ``CONFIRM_TIMINGS``, cached as confirmed (timed again once only)."""
        name = check_name(kept) + (f"-{check_name(dict.fromkeys(bypassed, 0))}" if bypassed else "")
        point = (f"{key}|paired|plan+blocks|" if bypassed else checked) + name
        ms = _cached_whole(cached, point, lambda: paired(kept, bypassed), widths=kept)
        mark = f"{key}|confirmed|{name}"
        if confirm and cached.cache.get(mark) is None:
            timings = [ms] + [paired(kept, bypassed) for _ in range(CONFIRM_TIMINGS - 1)]
            ms = statistics.median(timings)
            cached.cache.put(point, ms, widths=kept)
            cached.cache.put(mark, ms)
            cached.measured += CONFIRM_TIMINGS - 1
        cached.save()
        return ms

    table.measure_kept = measure_kept
    return table


def _cached_inside(
    cached: CachedTimer,
    key: str,
    name: str,
    point_copy: Callable[[str], nn.Module],
    inputs: Any,
) -> dict[str, float]:
    """The layers' in-model times at calibration point ``name`` (``op_timing.layer_ms_inside``
    on ``point_copy(name)``), cached with the table; none, and no copy made, on a target
    whose layers hooks cannot time."""
    target = cached.cache.target
    if not op_timing.times_layers_inside(target):
        return {}
    prefix = f"{key}|inside|{name}|"
    hit = {k[len(prefix) :]: v for k, v in cached.cache.points.items() if k.startswith(prefix)}
    if hit or cached.cache.get(f"{key}|inside|{name}") is not None:
        return hit
    times = op_timing.layer_ms_inside(point_copy(name), inputs, target)
    for layer, ms in times.items():
        cached.cache.put(prefix + layer, ms)
    cached.cache.put(f"{key}|inside|{name}", float(len(times)))  # measured, even if empty
    cached.measured += 1
    return times


def fit_inside(
    table: LatencyTable, inside: dict[str, dict[str, float]], points: dict[str, dict[str, int]]
) -> None:
    """Give each layer timed inside the model at every calibration point its in-model /
    isolated factor at those points (:func:`inside_factor` reads it at any width), so the table
    predicts the time a layer takes in the model, not alone. A layer missing from a point's
    timings keeps its isolated time, and the remainder fit's scale takes it: ``op_timing.
    layer_ms_inside`` gives none for a module called more than once a forward (a shared
    module, whose calls are one table layer each; an attention module's projections)."""
    for layer in table.layers:
        if any(layer.name not in inside[n] for n in CALIBRATION):
            continue
        factors: dict[float, list[float]] = {}  # a width no point changes: one time, 3 factors
        for n in CALIBRATION:
            alone = layer.time_at(points[n], table.sizes)
            if alone > 0:
                factors.setdefault(alone, []).append(inside[n][layer.name] / alone)
        layer.inside = tuple((x, statistics.mean(f)) for x, f in sorted(factors.items()))
        layer._memo.clear()


def _faults(cached: CachedTimer, key: str, model: nn.Module, inputs: Any) -> int | None:
    """Page faults of one dense forward on the cache's target (cached with the table)."""
    point = f"{key}|faults"
    if cached.cache.get(point) is None:
        faults = op_timing.model_faults(model, inputs, cached.cache.target)
        if faults is None:
            return None
        cached.cache.put(point, float(faults))
    return int(cached.cache.get(point))


def check_name(kept: dict[str, int]) -> str:
    """A plan check's point name: a digest of its kept widths (one point per distinct plan)."""
    return hashlib.sha1(json.dumps(sorted(kept.items())).encode()).hexdigest()[:16]


def _cached_whole(
    cached: CachedTimer,
    key: str,
    measure: Callable[[], float],
    widths: dict[str, int] | None = None,
) -> float:
    hit = cached.cache.get(key)
    if hit is None:
        hit = measure()
        cached.cache.put(key, hit, widths=widths)
        cached.measured += 1
    return hit


def fit_remainder(
    table: LatencyTable, measured: dict[str, float], points: dict[str, dict[str, int]]
) -> None:
    """Fit ``measured = scale * layers + fixed + var * output_size`` on the whole-model points.

    ``scale`` absorbs what isolated timing misses inside the model (weights evicted from cache
    by the other layers); it is 1 when every layer's in-model time was measured
    (``fit_inside``): fitted on the three points together with the other two terms it came out
    at 0.93 on ResNet-50, whose layers run 1.11-1.31x their isolated time in the model, and
    its first plans ran 9% over their prediction. ``fixed`` is the per-op overhead of
    everything that is not a conv or linear, ``var`` their size-proportional work. Three
    points fit it exactly, more by relative least squares, plan checks weighted
    ``CHECK_WEIGHT``: where plans disagree with the calibration points, the fit follows the
    plans (the dense model's own prediction may then
    move; its measured time stays the reference of speed-up targets). A fit outside sane bounds
    falls back to scale 1 (remainder fitted alone), then to a constant offset."""
    import numpy as np

    names = list(points)
    layer = np.array([table.layer_ms(points[n]) for n in names])
    act = np.array([table.act_fraction(points[n]) for n in names])
    y = np.array([measured[n] for n in names])
    a = np.stack([layer, np.ones_like(layer), act], 1)
    weight = np.array([1.0 if n in CALIBRATION else CHECK_WEIGHT for n in names])
    w = weight / np.maximum(y, 1e-9)  # relative errors: every point counts alike whatever its time
    scale, fixed, var = math.nan, math.nan, math.nan
    if not (table.layers and all(la.inside for la in table.layers)):  # else nothing to scale
        with contextlib.suppress(np.linalg.LinAlgError):
            scale, fixed, var = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)[0]
    if not (0.7 <= scale <= 1.6 and fixed >= 0 and var >= 0):  # scale 1, remainder only
        scale, r = 1.0, (y - layer) * w
        fixed, var = np.linalg.lstsq(a[:, 1:] * w[:, None], r, rcond=None)[0]
        if var < 0:
            var, fixed = 0.0, float(np.sum(r * w) / np.sum(w * w))
    if not (0.5 <= scale <= 2.0 and fixed >= -0.5 * y[0] and var >= 0):
        scale, fixed, var = 1.0, y[0] - layer[0], 0.0  # nothing sane fits: a constant offset
    scale, fixed, var = float(scale), float(fixed), float(var)
    table.scale = scale
    table.remainder_fixed = float(fixed)
    table.remainder_var = float(var)
    table.dense_ms = float(measured["dense"])
    table.calibration = {
        n: {"measured_ms": float(y[i]), "layers_ms": float(layer[i]), "act_fraction": float(act[i])}
        for i, n in enumerate(names)
    }
    table.calibration["fit"] = {"scale": table.scale, "fixed_ms": fixed, "var_ms": var}


def fit_block_fixed(table: LatencyTable, blocks: tuple[str, ...], out_ms: float) -> None:
    """Set ``table.block_fixed_ms`` from ``out_ms``, the dense model's time with every block of
    ``blocks`` bypassed: what that saved beyond the table's time of the blocks' layers (their
    norms, activations and adds: each op's fixed cost), per layer of theirs.

    A share of the fitted fixed remainder by layer count guessed it before (2026-12-03: first
    checks of blocks plans -6% to +13% off, over in 6 of 8). Bounded by 0 and the whole fixed
    remainder (itself fitted, and below 0 on ResNet-50 at batch 16): a saving short of the
    layers' predicted time is the layer fit's error, which the plan checks' correction takes,
    not a negative op time. Credited as one (ResNet-50 at batch 1, run 11:56 of 2026-12-03:
    -0.82 ms per layer, after a noisy plan check had skewed the fit), it made a narrowed block
    look dearer to remove than to keep, and the first checks of both blocks plans measured half
    their prediction."""
    inside = table.layers_inside(blocks)
    if not inside:
        return
    layers = sum(table.layer_cost(table.layers[i], {}) for i in inside)
    extra = min(max(table.dense_ms - out_ms - layers, 0.0), max(table.remainder_fixed, 0.0))
    table.block_fixed_ms = extra / len(inside)
    table.calibration["blocks_out"] = {
        "measured_ms": float(out_ms), "layers_saving_ms": float(layers),
        "block_fixed_ms_per_layer": table.block_fixed_ms, "blocks": len(blocks),
    }  # fmt: skip
