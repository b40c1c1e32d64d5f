"""Fitting a latency table to whole-model timings: what isolated layer timings miss.

Inside the model a layer runs slower than alone (its weights and input cold): with torch eager
each layer is also timed inside the dense model and the two calibration copies (forward hooks),
and its in-model / isolated factor is read between those points by its isolated time
(:func:`fit_inside`). What is not a conv or linear (norms, activations, adds, pooling,
attention's softmax) is the *remainder*: the dense model's measured time minus the predicted
layer sum, split into a fixed part and a part proportional to the layer outputs' total size,
fitted together with a scale on the layer sum (1 when every layer was timed inside the model) on
whole-model measurements: dense, every group at about half width and at about an eighth, and
every plan checked earlier on the same model and target (:func:`fit_remainder`; a plan's widths
are not uniform, and its check is the best evidence of how such widths run). When a plan may
remove residual blocks whole, one more point times the model with all of them out: what that
saves beyond their layers is the time of their other ops, credited per layer to each block
removed (:func:`fit_block_fixed`).
"""

from __future__ import annotations

import contextlib
import math
import statistics

from netslim.structural.latency_table import LatencyTable

CALIBRATION = ("dense", "half", "small")
"""The whole-model points every table measures; any other point is a plan's check."""
CHECK_WEIGHT = 3.0
"""A plan check's weight in the remainder fit against a calibration point's: plans do not keep
uniform widths, and a check is the evidence of how the widths plans choose run."""


def fit_inside(
    table: LatencyTable, inside: dict[str, dict[str, float]], points: dict[str, dict[str, int]]
) -> None:
    """Give each layer timed inside the model at every calibration point its in-model /
    isolated factor at those points (``Layer.time`` reads it at any width through
    ``inside_factor``), so the table predicts the time a layer takes in the model, not alone.
    A layer missing from a point's timings keeps its isolated time, and the remainder fit's
    scale takes it: ``op_timing.layer_ms_inside`` gives none for a module called more than
    once a forward (a shared module, whose calls are one table layer each; an attention
    module's projections)."""
    for layer in table.layers:
        if any(layer.name not in inside[n] for n in CALIBRATION):
            continue
        factors: dict[float, list[float]] = {}  # a width no point changes: one time, 3 factors
        for n in CALIBRATION:
            alone = layer.time_at(points[n], table.sizes)
            if alone > 0:
                factors.setdefault(alone, []).append(inside[n][layer.name] / alone)
        layer.inside = tuple((x, statistics.mean(f)) for x, f in sorted(factors.items()))
        layer.forget_predictions()


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
    plans (the dense model's own prediction may then move; its measured time stays the
    reference of speed-up targets). A fit outside sane bounds falls back to scale 1 (remainder
    fitted alone), then to a constant offset."""
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
