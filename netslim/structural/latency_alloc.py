"""A latency plan: the table built (or read from the cache), the budget from the config's time
target, the knapsack solved (:mod:`~netslim.structural.latency_knapsack`), its pruned model
checked on the target (:mod:`~netslim.structural.latency_checks`), and the report with its notes
(the floor lowered, time to spare, the allocator)."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from netslim._runtime import allocator
from netslim.core.blocks import find_blocks
from netslim.errors import NetslimWarning
from netslim.importance import batch_samples
from netslim.structural.groups import Analysis, Group
from netslim.structural.latency_blocks import (
    BLOCK_CRITERION,
    BLOCK_WEIGHT,
    BlockOption,
    block_options,
    block_weights,
)
from netslim.structural.latency_checks import (
    CHECK_TOLERANCE,
    PlanCheck,
    best_check,
    check_plans,
    stale_table_warning,
)
from netslim.structural.latency_knapsack import (
    MIN_KEEP_FRACTION,
    Allocation,
    KnapsackState,
    allocate_reaching,
    candidate_widths,
    value_curve,
)
from netslim.structural.latency_measure import build_table
from netslim.structural.latency_table import LatencyTable
from netslim.structural.op_timing import Target, width_multiple

MANY_FAULTS = 1000
"""Page faults a dense forward takes above which the report names the allocator: 4 MiB of freed
activations touched again each call (on the VM of docs/latency.md, ~3.7 us a fault)."""


def allocator_note(faults: int | None) -> str | None:
    """What the report says when the allocator hands freed activations back to the kernel."""
    if faults is None or faults < MANY_FAULTS or allocator() != "system":
        return None
    return (
        f"the dense model takes {faults} page faults a forward: the allocator returns freed "
        "activations to the kernel between calls; netslim.retain_freed_memory() "
        "(--retain-freed-memory), jemalloc or tcmalloc keep them, often much faster on CPU "
        "(time and deploy under the same setting)"
    )


def not_faster_note(measured_speedup: float | None, target: Target) -> str | None:
    """What the report says when the plan's check timed the pruned model no faster than the
    unpruned one: there time does not follow width (a GPU at small batch: kernel launches and
    framework overhead), and pruning costs accuracy for nothing."""
    if measured_speedup is None or measured_speedup > 1.0:
        return None
    return (
        f"the pruned model timed {measured_speedup:.2f}x the unpruned model's speed, no faster: "
        f"on {target.runtime} at batch {target.batch} time barely follows the widths (fixed "
        "costs such as kernel launches dominate); prune for a larger batch or another runtime, "
        "or keep the unpruned model"
    )


def floor_note(alloc: Allocation, suggest_blocks: bool = False) -> str | None:
    """What the report says when the plan needed a floor below ``MIN_KEEP_FRACTION``;
    ``suggest_blocks``: the plan could not remove blocks and the model has blocks it could
    remove, so the note names that option. Widths alone reach such a target only by thinning
    every layer (MobileNetV2 at batch 1, 3x, docs/latency.md: widths alone kept 6% of the MACs,
    with blocks out 20%)."""
    if alloc.min_fraction >= MIN_KEEP_FRACTION:
        return None
    hint = ""
    if suggest_blocks:
        hint = "; a plan that may also remove whole residual blocks (blocks=True, --blocks)"
        hint += " may keep more of every layer"
    return (
        f"every group at 1/{round(1 / MIN_KEEP_FRACTION)} of its channels is slower than the "
        f"target: the floor was lowered to 1/{round(1 / alloc.min_fraction)} of its channels "
        f"per group to reach it (expect a larger accuracy loss{hint})"
    )


def slack_note(
    table: LatencyTable,
    alloc: Allocation,
    budget_ms: float,
    sizes: dict[str, int],
    fixed: dict[str, int],
    round_to: int,
    correction: float = 1.0,
    measured_ms: float | None = None,
    blocks: tuple[BlockOption, ...] = (),
) -> str | None:
    """What the report says when the plan runs more than ``CHECK_TOLERANCE`` under the budget
    because no group can widen by its next step within it: the user asked for one speed and
    gets more, keeping less than a finer width step would. Coarse groups cause it (ViT-B/16's
    residual stream is 12 atoms, one per head, each step several % of the model's time;
    bench/_latency_granularity.py). ``sizes``: every group's width; ``fixed``: groups whose
    counts the plan may not change; ``correction``: as in
    :func:`~netslim.structural.latency_knapsack.allocate_reaching`;
    ``measured_ms``: the plan's check, if any, which then sets both the plan's time and the
    scale of the table's step costs (its ratio to the table's prediction); ``blocks``: the
    options the plan was solved with."""
    scale = correction if measured_ms is None else measured_ms / alloc.predicted_ms
    plan_ms = alloc.predicted_ms * scale
    if plan_ms >= budget_ms * (1 - CHECK_TOLERANCE):
        return None
    state = KnapsackState(
        table, {**sizes, **alloc.counts, **fixed}, blocks, frozenset(alloc.removed)
    )
    steps = []
    for gid, kept in alloc.counts.items():
        if gid in fixed or not state.active(gid):
            continue
        wider = [w for w in candidate_widths(table.sizes[gid], round_to, 1) if w > kept]
        if not wider:
            continue
        cost = state.delta(gid, wider[0])
        # the step's far end: the widest width that costs no more (a staircase's fast end)
        end = max(w for w in wider if state.delta(gid, w) <= cost + 1e-12)
        steps.append((cost * scale, gid, kept, end))
    spare = budget_ms - plan_ms
    if not steps or min(steps)[0] <= spare + 1e-9 * budget_ms:  # a step fits: not the grid
        return None
    cost, gid, kept, wider = min(steps)
    how = "predicted" if measured_ms is None else "measured"
    return (
        f"the plan is {how} to take {1 - plan_ms / budget_ms:.0%} less time than the target "
        f"({plan_ms:.3f} against {budget_ms:.3f} ms): the cheapest wider step of any group, "
        f"{gid} from {kept} to {wider} of {table.sizes[gid]}, costs about {cost:.4g} ms with "
        f"{spare:.4g} ms to spare, and the widths kept are the most importance that fits"
    )


def target_of(config: Any, example_inputs: Any) -> Target:
    batch = config.batch if config.batch is not None else batch_samples(example_inputs)
    return Target(config.runtime, config.threads, batch)


def plan_counts(
    model: nn.Module,
    example_inputs: Any,
    analysis: Analysis,
    groups: list[Group],
    scores: dict[str, torch.Tensor],
    fixed: dict[str, int],
    config: Any,
    *,
    pruned_copy: Callable[[dict[str, int]], nn.Module],
    calibration: Any = None,
) -> tuple[dict[str, int], dict[str, Any]]:
    """Counts for every group of ``groups`` under ``config``'s time target, and a report:
    target, budget, dense and predicted ms, table build time, and the measured ms and speed-up
    of the plan (its check, the ``best_check`` of those made: a copy with the plan's widths,
    timed paired with ``model`` before it is pruned; widths, not values, set the time).
    ``pruned_copy``: see :func:`~netslim.structural.latency_measure.build_table`;
    ``calibration`` (:class:`netslim.importance.Calibration`): with ``config.blocks``, each
    block's weight is measured on it (:func:`~netslim.structural.latency_blocks.block_weights`)."""
    target = target_of(config, example_inputs)
    found = find_blocks(model, example_inputs) if config.blocks else []
    tuple_blocks = [b.name for b in found if not b.returns_tensor]
    found = [b for b in found if b.returns_tensor]
    names = tuple(b.name for b in found)
    table = build_table(
        model, example_inputs, analysis, groups, target, pruned_copy=pruned_copy, blocks=names
    )
    if config.target_latency_ms is not None:
        budget = float(config.target_latency_ms)
    else:
        budget = table.dense_ms / float(config.target_speedup)
    info: dict[str, Any] = {
        "runtime": target.runtime,
        "threads": target.threads,
        "batch": target.batch,
        "budget_ms": budget,
        "dense_ms": table.dense_ms,
        "table_s": round(table.build_s, 3),
        "table_points_measured": table.measured_points,
        "allocator": allocator(),
        "page_faults_per_call": table.page_faults,
    }
    sizes = {g.id: g.size for g in groups}
    if table.predict(fixed) <= budget:
        kept = {**sizes, **fixed}
        info["predicted_ms"] = table.predict(fixed)
        info["note"] = "already under the target: nothing pruned"
        if kept == sizes or table.measure_kept is not None:
            measured = table.dense_ms if kept == sizes else table.measure_kept(kept)
            info["measured_ms"] = measured
            info["measured_speedup"] = table.dense_ms / measured
        return kept, info
    values = {g: value_curve(s) for g, s in scores.items()}
    # the runtime's own multiple joins the user's (``width_multiple``: ONNX Runtime's blocks)
    round_to = math.lcm(config.round_to, width_multiple(target.runtime))
    info["round_to"] = round_to
    options: dict[str, Any] = {"round_to": round_to, "fixed": fixed}
    if config.blocks:
        scoring = time.perf_counter()
        weights = block_weights(model, found, calibration)
        # ablation runs the model once per block and batch: this can outweigh the solve
        info["block_weights_s"] = round(time.perf_counter() - scoring, 3)
        options["blocks"] = block_options(
            table, names, BLOCK_WEIGHT if weights is None else weights
        )
        info["removable_blocks"] = len(options["blocks"])
        info["block_weights"] = {b.name: b.weight for b in options["blocks"]}
        info["block_weights_from"] = "constant" if weights is None else BLOCK_CRITERION
        if tuple_blocks:  # a bypass returns one tensor; these return more
            info["blocks_kept_whole"] = {name: "returns a tuple" for name in tuple_blocks}
    start = time.perf_counter()
    alloc = allocate_reaching(table, values, budget, **options)
    info["knapsack_s"] = time.perf_counter() - start
    checks: list[PlanCheck] = []
    if table.measure_kept is not None:
        checks, solving = check_plans(table, values, budget, alloc, sizes, options)
        info["knapsack_s"] += solving
    pick = -1
    correction = 1.0
    if checks:  # the plan returned is the best checked one; its check is the report's
        pick = best_check([c.measured_ms for c in checks], budget)
        alloc, correction = checks[pick].alloc, checks[pick].correction
        info["returned_check"] = pick
        info["measured_ms"] = checks[pick].measured_ms
        info["measured_speedup"] = table.dense_ms / checks[pick].measured_ms
    info["checks"] = [c.report() for c in checks]
    info["check_tolerance"] = CHECK_TOLERANCE
    warning = stale_table_warning(info["checks"], pick, table.lines_cached)
    if warning:
        warnings.warn(warning, NetslimWarning, stacklevel=2)
        info["warning"] = warning
    info["fit"] = table.calibration.get("fit")
    info["predicted_ms"] = alloc.predicted_ms * correction
    info["starts"] = alloc.starts
    info["min_keep_fraction"] = alloc.min_fraction
    suggest = (  # traced only for this note, and only when blocks were not already an option
        alloc.min_fraction < MIN_KEEP_FRACTION
        and not config.blocks
        and any(b.returns_tensor for b in find_blocks(model, example_inputs))
    )
    lowered = floor_note(alloc, suggest_blocks=suggest)
    futile = not_faster_note(info.get("measured_speedup"), target)
    blocks = options.get("blocks", ())
    # the user asked for one speed and gets more, keeping less than asked for
    spare = slack_note(
        table, alloc, budget, sizes, fixed, round_to, correction, info.get("measured_ms"), blocks
    )
    # alloc.note: the target is out of reach, the plan is the fastest the floor allows
    for message in (lowered, alloc.note, futile, spare):  # results to look at twice
        if message:
            warnings.warn(message, NetslimWarning, stacklevel=2)
    notes = [lowered, alloc.note, futile, spare, allocator_note(table.page_faults)]
    notes = [n for n in notes if n]
    if notes:
        info["note"] = "; ".join(notes)
    if blocks:
        info["removed_blocks"] = list(alloc.removed)
        info["blocks_out"] = table.calibration.get("blocks_out")
    return {**sizes, **alloc.counts, **fixed}, info  # a removed block's groups are whole
