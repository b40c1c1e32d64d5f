"""``bench/latency.py --part bound``: how far the choice of *what to keep* can move the speed-up
per MACs reduction, on the same latency table and budget.

The knapsack keeps the most importance within a time budget. A value that counts the MACs a
channel carries instead keeps the most MACs for the time: the allocation with the highest speed-up
per MACs reduction this table can give. Each value is solved for the same budget (the dense
time over the target, the table's first solve, no plan checks), and its pruned model is timed
paired with the dense model (median of ``REPEATS`` paired ratios). A probe of the allocation's
objective, not a netslim option: the plans keep less importance as the MACs weight grows.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

# weight of the importance in the value; the rest is the MACs a channel carries (both per unit:
# a group's value curve over the model's total)
ALPHAS = (1.0, 0.5, 0.0)
# Screened (2026-12-02 18:04, AMD EPYC host, AVX2, alone; ``bound_rows`` with ALPHAS set to 1, 0.95,
# 0.9, 0.8, batch 1, no results written): a small MACs weight as a tie-breaker among plans of
# about equal importance does not lift the efficiency beyond the paired timings' noise (about 5%
# between two plans of the same MACs). ResNet-50 2x 0.92 / 0.89 / 0.88 / 0.87 (importance kept
# 0.850 / 0.852 / 0.784 / 0.781), 3x 0.76 / 0.81 / 0.82 / 0.82 (0.711 / 0.661 / 0.658 / 0.656);
# MobileNetV2 2x 0.39 / 0.45 / 0.46 / 0.43, 3x 0.12 / 0.11 / 0.12 / 0.11 (every plan about 24x
# fewer MACs: per-op overhead sets that host's batch-1 time).
REPEATS = 3


def _macs_values(analysis, groups, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per group: MACs kept with ``k`` channels, linear in ``k`` at the slope of the group's
    last channel with every other group whole (``count_macs``), over the model's MACs."""
    from netslim.structural.cost import count_macs

    base = count_macs(analysis)
    out = {}
    for g in groups:
        slope = base - count_macs(analysis, {g.leaf: g.size - 1})
        out[g.id] = torch.arange(1, sizes[g.id] + 1, dtype=torch.float64) * slope / base
    return out


def bound_rows(name: str, dense: nn.Module, x1: torch.Tensor, batch: int, macs) -> list[dict]:
    """One row per target x value weight: predicted and measured ms, speed-up, MACs reduction,
    efficiency and the importance the plan keeps (fraction of the model's)."""
    from netslim.structural import Channels
    from netslim.structural.engine import planning_inputs, pruned_copies
    from netslim.structural.latency_alloc import target_of
    from netslim.structural.latency_knapsack import allocate_reaching, value_curve
    from netslim.structural.latency_measure import build_table
    from netslim.structural.op_timing import time_ratio

    # the planner's own inputs and calibration copies, all from the dense model (copies of it,
    # never of a model pruned since: a bound run before 2026-12-02 took its copies from a model
    # that an earlier 2x plan had pruned in place, so its rows were narrower than their solves)
    config = Channels(target_speedup=2.0, runtime="torch", threads=1, batch=batch)
    example = (x1,)
    planning = planning_inputs(dense, example, config)
    pruned_copy = pruned_copies(dense, example)
    groups, target = planning.groups, target_of(config, example)
    sizes = {g.id: g.size for g in groups}
    table = build_table(dense, example, planning.analysis, groups, target, pruned_copy=pruned_copy)
    importance = {k: value_curve(s) for k, s in planning.ranked.items()}
    total = sum(float(v[-1]) for v in importance.values())
    importance = {k: v / total for k, v in importance.items()}
    by_macs = _macs_values(planning.analysis, groups, sizes)
    x = x1.expand(batch, *x1.shape[1:]).contiguous()
    base = macs(dense, x1)
    rows = []
    for speedup in (2.0, 3.0):
        budget = table.dense_ms / speedup
        for alpha in ALPHAS:
            values = {k: alpha * importance[k] + (1 - alpha) * by_macs[k] for k in importance}
            alloc = allocate_reaching(
                table, values, budget, fixed=planning.fixed, round_to=config.round_to
            )
            pruned = pruned_copy({**sizes, **alloc.counts, **planning.fixed})
            ratio = statistics.median(
                time_ratio(pruned, dense, (x,), target) for _ in range(REPEATS)
            )
            reduction = base / macs(pruned, x1)
            kept = sum(float(importance[k][alloc.counts[k] - 1]) for k in importance)
            rows.append({
                "model": name, "batch": batch, "target": speedup, "alpha": alpha,
                "predicted_ms": alloc.predicted_ms, "measured_ms": table.dense_ms * ratio,
                "speedup": 1 / ratio, "macs_reduction": reduction,
                "efficiency": 1 / ratio / reduction, "importance_kept": kept,
                "min_keep_fraction": alloc.min_fraction,
            })  # fmt: skip
            print(f"  {rows[-1]}", flush=True)
    return rows
