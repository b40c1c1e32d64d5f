"""Measuring a model's latency table on a target (or reading it from the on-disk cache).

Each conv/linear layer is found by running the model once with its calls recorded (an
``nn.MultiheadAttention``'s projections count as linear layers: it runs them functionally, and
on ViT-B/16 they are a third of the linear work, their widths set by the residual stream's
group) and timed *in isolation* with the model's own geometry (kernel, stride, input spatial
size / tokens, batch) along the lines of :mod:`~netslim.structural.latency_table`. Whole-model
points (dense, the calibration copies, every plan checked) are timed paired with the dense model
and the table fitted to them (:mod:`~netslim.structural.latency_fit`). Whole-model times are
cached with the points, keyed by the model's layer list, and so is the dense model's count of
page faults a forward (torch eager): an allocator that hands freed activations back to the
kernel can take half a model's time (``netslim.retain_freed_memory``).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netslim.measure._call import call, inference
from netslim.structural import op_timing
from netslim.structural.groups import Analysis, Group
from netslim.structural.latency_fit import (
    CALIBRATION,
    fit_block_fixed,
    fit_inside,
    fit_remainder,
)
from netslim.structural.latency_table import Dim, LatencyTable, Layer, grid
from netslim.structural.op_timing import CachedTimer, OpShape, Target

CONFIRM_TIMINGS = 3
"""Paired timings behind a check found far off its prediction (their median). On a shared host
one timing can be far off: in run 23:44 of 2026-12-01, vgg_small (ONNX Runtime, 2 threads,
batch 16) returned for its 3x target a 2x plan's cached check of 0.73 ms against 1.21 ms
predicted, and two copies of those widths timed in the same rounds then ran 0.88 and 1.62 ms."""


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
        layer.forget_predictions()  # its predictions change with its lines
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
    may bypass, whose own non-layer time is then measured too (``latency_fit.fit_block_fixed``).

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
    table = LatencyTable(target, layers, sizes, lines_cached=cached.measured == 0)
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
