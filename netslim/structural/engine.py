"""Decide (config -> plan) and apply (plan -> smaller model): the structural pipeline."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from netslim._runtime import one_thread, paused_gc
from netslim.core.copying import copy_model
from netslim.core.names import check_config_names, first_within, within
from netslim.errors import NetslimWarning, PruningError, UnsupportedModelError
from netslim.structural.allocation import global_counts, keep_mask, local_counts
from netslim.structural.apply import CheckFailed, apply_masks
from netslim.structural.config import Channels
from netslim.structural.cost import count_macs, count_params
from netslim.structural.graph import Boundary
from netslim.structural.groups import Analysis, Group, analyze, build_groups
from netslim.structural.importance import group_scores, normalized, prepared
from netslim.structural.latency_blocks import bypass, check_bypass
from netslim.structural.plan import PruningPlan
from netslim.structural.ties import find_ties, in_twins, tied_counts


def candidates(analysis: Analysis, config: Channels) -> list[Group]:
    """Groups the config allows to shrink: not the outputs of an ``ignore``d module (its
    inputs may shrink with the layer before), nothing in a ``freeze``d one."""
    out = []
    kept = _output_leaves(analysis, config.ignore)
    A = analysis.graph.atoms
    for g in analysis.groups:
        if (g.within and not config.within_heads) or (g.conv_groups and not config.conv_groups):
            continue
        if A.find(g.leaf) in kept:
            continue
        if any(first_within(m.module, config.freeze) is not None for m in g.members):
            continue
        out.append(g)
    return out


def _output_leaves(analysis: Analysis, names: tuple[str, ...]) -> set[int]:
    """Leaves (roots) of every tensor returned by a module under ``names``: Torch-Pruning's
    ``ignored_layers`` meaning (a classifier keeps its classes, the block before it shrinks;
    for a container, every layer inside keeps its outputs, so only its inputs shrink)."""
    if not names:
        return set()
    A = analysis.graph.atoms
    out: set[int] = set()
    for module, atoms in analysis.graph.module_outputs.items():
        if first_within(module, names) is not None:
            out.update(A.find(leaf) for a in atoms for leaf in A.leaves(a))
    return out


def _ratio_for(g: Group, config: Channels) -> float | None:
    keys = sorted(config.per_module, key=len, reverse=True)
    for m in g.members:
        hit = first_within(m.module, keys)
        if hit is not None:
            return config.per_module[hit]
    return None


def refuse_torch_prune(model: nn.Module) -> None:
    """Channels slices netslim's masks with their weights, but a ``torch.nn.utils.prune`` mask
    lives in a forward hook whose stale ``weight`` attribute no updater can size: refuse it up
    front, naming the tensor, rather than fail half-way."""
    for path, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                key = f"{path}.{hook._tensor_name}" if path else hook._tensor_name
                raise UnsupportedModelError(
                    f"{key}: masked by torch.nn.utils.prune, which channel pruning cannot "
                    "slice; convert it first with netslim.unstructured.from_torch_prune(model)"
                )


@dataclass
class PlanningInputs:
    """What every allocation (ratio, MACs or parameter target, time target) decides from:
    the traced model, the groups it may shrink, their channel scores, and the counts that
    ``per_module`` ratios fix. Nothing in it refers to a pruned model."""

    analysis: Analysis
    groups: list[Group]
    scores: dict[str, torch.Tensor]
    """Per group, the criterion's score of each channel (what ``keep_mask`` ranks)."""
    ranked: dict[str, torch.Tensor]
    """Per group left to the allocation, the scores it compares across groups (normalised
    where the criterion asks)."""
    fixed: dict[str, int]
    """Kept counts of the groups a ``per_module`` ratio sets."""


def planning_inputs(
    model: nn.Module,
    example_inputs: Any,
    config: Channels,
    analysis: Analysis | None = None,
    calibration: Any = None,
) -> PlanningInputs:
    """Trace (unless ``analysis`` is given) and score ``model`` under ``config``; the model is
    not changed. ``calibration`` (:class:`netslim.importance.Calibration`) feeds data-driven
    criteria."""
    refuse_torch_prune(model)
    check_config_names(model, config)
    analysis = analysis or analyze(model, example_inputs)
    criterion = prepared(config.criterion, model, calibration)
    groups = [g for g in candidates(analysis, config) if criterion.applies(g)]
    gen = torch.Generator().manual_seed(config.seed)
    tensors = analysis.tensors  # masked weights as the forward sees them
    cache: dict = {}
    criterion.fill_cache(groups, tensors, cache)  # the big reductions, on every thread
    with one_thread():
        scores = {g.id: group_scores(g, tensors, criterion, gen, cache) for g in groups}
    sizes = {g.id: g.size for g in groups}
    override = {g.id: r for g in groups if (r := _ratio_for(g, config)) is not None}
    fixed = local_counts({k: sizes[k] for k in override}, override, config.round_to)
    ranked = {
        k: normalized(scores[k]) if criterion.normalize else scores[k]
        for k in sizes
        if k not in override
    }
    return PlanningInputs(analysis, groups, scores, ranked, fixed)


@paused_gc()
def make_plan(
    model: nn.Module,
    example_inputs: Any,
    config: Channels,
    analysis: Analysis | None = None,
    calibration: Any = None,
) -> tuple[PruningPlan, dict[str, Any]]:
    """Score and allocate; returns the plan and notes (e.g. an unreachable target).
    ``calibration`` (:class:`netslim.importance.Calibration`) feeds data-driven criteria."""
    inputs = planning_inputs(model, example_inputs, config, analysis, calibration)
    analysis, groups, scores = inputs.analysis, inputs.groups, inputs.scores
    fixed, norm = inputs.fixed, inputs.ranked
    rest = {g.id: g.size for g in groups if g.id in norm}
    notes: dict[str, Any] = {}

    A, ties = analysis.graph.atoms, analysis.graph.count_ties

    def counts_at(r: float, scope: str) -> dict[str, int]:
        if scope == "global":
            c = global_counts(rest, norm, r, config.round_to)
        else:
            c = local_counts(rest, dict.fromkeys(rest, r), config.round_to)
        return tied_counts({**c, **fixed}, ties, groups, A)

    target = config.target_macs if config.target_macs is not None else config.target_params
    if config.time_target:
        from netslim.structural.latency_alloc import plan_counts

        counts, notes["latency"] = plan_counts(
            model,
            example_inputs,
            analysis,
            groups,
            norm,
            fixed,
            config,
            pruned_copy=pruned_copies(model, example_inputs),
            calibration=calibration,
        )
    elif target is not None:
        measure = count_macs if config.target_macs is not None else count_params
        leaf = {g.id: g.leaf for g in groups}
        base = measure(analysis)

        scope = config.scope or "global"

        def frac(r: float) -> float:
            c = counts_at(r, scope)
            return measure(analysis, {leaf[k]: n for k, n in c.items()}) / max(base, 1)

        lo, hi = 0.0, 0.999
        if frac(hi) > target:
            what = "MACs" if config.target_macs is not None else "parameters"
            notes["target"] = (
                f"the target of {target:g} of the {what} is unreachable: the plan keeps "
                f"{frac(hi):.3f} of them, the fewest its groups allow"
            )
            warnings.warn(notes["target"], NetslimWarning, stacklevel=2)
            lo = hi
        else:
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if frac(mid) <= target else (mid, hi)
            lo = hi
        counts = counts_at(lo, scope)
        notes["ratio"] = round(lo, 4)
    else:
        counts = counts_at(config.ratio, config.scope or "local")
    counts = tied_counts(counts, ties, groups, A)  # the time target's counts too
    plan = PruningPlan(example_inputs=example_inputs)
    for g in groups:
        n = counts[g.id]
        if n < g.size:
            mask = keep_mask(scores[g.id], n)
            plan.keep[g.id] = mask.nonzero().flatten().tolist()
            plan.sizes[g.id] = g.size
    plan.bypass = list(notes.get("latency", {}).get("removed_blocks", []))
    plan.traced_on = analysis  # reused by apply on the same, untouched model
    return plan, notes


@paused_gc()
def apply_plan(model: nn.Module, plan: PruningPlan, example_inputs: Any = None) -> dict[str, Any]:
    """Apply ``plan`` to ``model`` in place (re-traced unless the plan was just made on it)."""
    refuse_torch_prune(model)
    inputs = example_inputs if example_inputs is not None else plan.example_inputs
    analysis = plan.traced_on
    if analysis is None or analysis.graph.model is not model or example_inputs is not None:
        analysis = analyze(model, inputs)
    try:
        return _apply(model, plan, analysis, inputs)
    except CheckFailed as exc:
        if not analysis.graph.on_meta:
            raise
        # the model may take another path on meta tensors than on real ones: trace for real
        real = analyze(model, inputs, meta=False)
        try:
            masks = plan.masks(real)
        except PruningError:
            raise exc from None  # the plan's groups exist only in the meta trace
        return _apply(model, plan, real, inputs, masks)


def _apply(
    model: nn.Module,
    plan: PruningPlan,
    analysis: Analysis,
    inputs: Any,
    masks: dict[int, torch.Tensor] | None = None,
) -> dict[str, Any]:
    plan.traced_on = None  # the model changes below: never reuse this trace again
    masks = plan.masks(analysis) if masks is None else masks
    check_bypass(model, plan.bypass)  # before anything changes
    report = apply_masks(model, analysis, masks, inputs)
    if plan.bypass:  # after the widths: the check above compared them with the masked model
        bypass(model, plan.bypass)
        report["bypassed_blocks"] = list(plan.bypass)
    if plan.example_inputs is None:
        plan.example_inputs = inputs
    report["boundaries"] = [b.to_dict() for b in analysis.graph.boundaries]
    return report


MAX_REPAIRS = 8


def _stuck_atoms(analysis: Analysis, rec: Any, got: list | None) -> list[int]:
    """Dims of a failed op that kept their *old* size: those sizes are constants in the code.
    Without that evidence, every dim the op touches."""
    A = analysis.graph.atoms
    stuck = []
    if got is not None and len(got) == len(rec.outs):
        for shape, atoms in zip(got, rec.outs, strict=True):
            if len(shape) == len(atoms):
                stuck += [a for s, a in zip(shape, atoms, strict=True) if s == A.size(a)]
    return stuck or [a for d in rec.ins + rec.outs for a in d]


def _op_atoms(analysis: Analysis, rec: Any, got: list | None) -> list[int]:
    """Every dim the failed op reads or writes."""
    return [a for d in rec.ins + rec.outs for a in d]


def _module_atoms(analysis: Analysis, rec: Any, got: list | None) -> list[int]:
    """Every dim of every op inside the failed op's module: for sizes the code derives from a
    *different* tensor than the one it reshapes (e.g. ``head_dim = x.shape[-1] // num_heads``
    applied to the qkv projection), which no single op's dims reveal."""
    if not rec.module:
        return _op_atoms(analysis, rec, got)
    inside = [r for r in analysis.graph.eval_records if within(r.module, rec.module)]
    return [a for r in inside for d in r.ins + r.outs for a in d]


# Escalating repairs for one op that keeps failing: the dims that kept their old size, then all
# of the op's dims, then all dims of its module. Each level is tried only when the previous one
# locked nothing new or the same op failed again.
_REPAIR_LEVELS = (_stuck_atoms, _op_atoms, _module_atoms)


def _lock_with_twins(
    analysis: Analysis, rec: Any, level: Any, got: list | None, reason: str, repaired: list
) -> bool:
    """Lock what repair ``level`` finds for ``rec``, and the same in every twin block; True when
    anything new was locked (a retry can then give a different plan)."""
    graph = analysis.graph
    atoms = level(analysis, rec, got)
    changed = graph.lock_all(atoms, reason)
    if changed:
        repaired.append(Boundary(rec.name, rec.module, reason).to_dict())
    for twin in _twins(graph, rec):  # the same code in every block of this class
        if level is _stuck_atoms:  # the twin's shapes are unknown: copy the positions
            twin_atoms = _same_positions(rec, atoms, twin, graph.atoms)
        else:
            twin_atoms = level(analysis, twin, None)
        if graph.lock_all(twin_atoms, f"as {rec.module}: {reason}"):
            repaired.append(Boundary(twin.name, twin.module, f"as {rec.module}").to_dict())
            changed = True
    return changed


def _lock_scales_with_twins(
    analysis: Analysis, rec: Any, atoms: list[int], reason: str, repaired: list
) -> bool:
    """Lock the dims ``rec``'s scale was recomputed from, and the same scale's dims in every
    twin block; True when anything new was locked."""
    graph = analysis.graph
    changed = graph.lock_all(atoms, reason)
    if changed:
        repaired.append(Boundary(rec.name, rec.module, reason).to_dict())
    mine = rec.info.get("fixed_scales", [])
    which = [j for j, (a, _) in enumerate(mine) if a in atoms]
    for twin in _twins(graph, rec):
        theirs = twin.info.get("fixed_scales", [])
        if len(theirs) != len(mine):
            continue
        if graph.lock_all([theirs[j][0] for j in which], f"as {rec.module}: {reason}"):
            repaired.append(Boundary(twin.name, twin.module, f"as {rec.module}").to_dict())
            changed = True
    return changed


def _tie_counts(
    analysis: Analysis, plan: PruningPlan, rec: Any, exc: CheckFailed, tied: list[str]
) -> bool:
    """When ``rec`` failed because the code derives a size from a pruned width (``C //
    num_heads``), tie the two counts (in every twin block too) instead of locking either;
    True when a new tie was made (the plan is then remade under it). A tie keeps no channel
    whole, so it is a note (``tied``), not a boundary."""
    graph = analysis.graph
    by_id = {g.id: g for g in analysis.groups}
    kept = {by_id[gid].leaf: len(k) for gid, k in plan.keep.items() if gid in by_id}
    found, whole = find_ties(graph, rec, exc.got, kept)
    if not found:
        return False
    twins = sorted({t.module for t in _twins(graph, rec)})
    found, whole = in_twins(graph, rec.module, twins, found, whole)
    new = [t for t in dict.fromkeys(found) if t not in graph.count_ties]
    if not new:
        return False
    graph.count_ties += new
    graph.lock_all(whole, f"{rec.module}: the code counts channels per head of this width")
    tied.append(
        f"{rec.module or type(graph.model).__name__}: counts tied to a width the code reads "
        f"({new[0].per} channels per head) after: {exc}"
    )
    return True


def _twins(graph: Any, rec: Any) -> list[Any]:
    """The op at the same position in every other module of ``rec``'s module class.

    A size hard-coded in a block's code is hard-coded in all its copies; fixing them one retry
    at a time would need one full plan-and-apply per block (a 12-block stage exceeds any
    sensible retry budget)."""
    if not rec.module:
        return []
    mods = dict(graph.model.named_modules())
    cls = type(mods.get(rec.module))
    by_module: dict[str, list[Any]] = {}
    for r in graph.eval_records:
        if r.module and type(mods.get(r.module)) is cls:
            by_module.setdefault(r.module, []).append(r)
    own = by_module.get(rec.module, [])
    if rec not in own:
        return []
    k = own.index(rec)
    return [
        rs[k]
        for m, rs in by_module.items()
        if m != rec.module and len(rs) == len(own) and rs[k].name == rec.name
    ]


def _same_positions(rec: Any, stuck: list[int], twin: Any, atoms: Any) -> list[int]:
    """``twin``'s atoms at the (tensor, dim) positions where ``rec``'s stuck atoms sit."""
    roots = {atoms.find(a) for a in stuck}
    out = []
    for mine, theirs in zip(rec.ins + rec.outs, twin.ins + twin.outs, strict=False):
        for a, b in zip(mine, theirs, strict=False):
            if atoms.find(a) in roots:
                out.append(b)
    return out


@paused_gc()
def prune(
    model: nn.Module, example_inputs: Any, config: Channels | None = None, calibration: Any = None
):
    """Plan and apply in one call; returns ``(plan, report)``.

    When the pruned forward shows an op that did not follow the new sizes (a size hard-coded in
    the model's code, e.g. ``x.split(8)``), that op's channels are made a boundary and the plan
    is remade, a few times at most; the model is restored before each retry.
    """
    config = config or Channels()
    analysis = analyze(model, example_inputs)
    before = (count_params(analysis), count_macs(analysis))
    repaired: list[dict[str, str]] = []
    tied: list[str] = []  # notes of count ties made on the way
    levels: dict[int, int] = {}  # record index -> repair escalation reached
    tie_of: dict[int, list] = {}  # record index -> the count ties its failure made
    for attempt in range(MAX_REPAIRS + 1):
        plan, notes = make_plan(model, example_inputs, config, analysis, calibration)
        try:
            report = _apply(model, plan, analysis, example_inputs)
            break
        except CheckFailed as exc:
            if analysis.graph.on_meta:
                # the real trace is the ground truth: remake the plan on it, then repair there
                analysis = analyze(model, example_inputs, meta=False)
                continue
            rec = exc.record
            if rec is None or attempt == MAX_REPAIRS:
                raise
            r = analysis.graph.records[rec]
            graph = analysis.graph
            if rec in tie_of:  # the tie did not explain this op's sizes: undo it, then repair
                if tie_of[rec]:
                    graph.count_ties = [t for t in graph.count_ties if t not in tie_of[rec]]
                    tied.append(f"{r.module}: its count tie was released (the op failed again)")
                    tie_of[rec] = []  # and never tied again
            else:
                known = len(graph.count_ties)
                if _tie_counts(analysis, plan, r, exc, tied):
                    tie_of[rec] = graph.count_ties[known:]
                    analysis = Analysis(graph, build_groups(graph))
                    continue
            reason = f"sizes fixed in code: {exc}"
            if exc.atoms:  # the dims are known: no escalation
                if not _lock_scales_with_twins(analysis, r, exc.atoms, reason, repaired):
                    raise
                analysis = Analysis(analysis.graph, build_groups(analysis.graph))
                continue
            level = levels.get(rec, 0)
            got = exc.got
            while level < len(_REPAIR_LEVELS):
                level += 1
                if _lock_with_twins(analysis, r, _REPAIR_LEVELS[level - 1], got, reason, repaired):
                    break
            else:  # every escalation already applied: the failure is not about sizes
                raise
            levels[rec] = level
            analysis = Analysis(analysis.graph, build_groups(analysis.graph))
    report["boundaries"] = repaired + report["boundaries"]
    if "latency" in notes:
        report["latency"] = notes.pop("latency")
    report["notes"] = report.get("notes", []) + tied + [f"{k}: {v}" for k, v in notes.items()]
    kept = {}
    by_id = {g.id: g for g in analysis.groups}
    for gid, k in plan.keep.items():
        kept[by_id[gid].leaf] = len(k)
    out = plan.bypass
    report["params"] = {"before": before[0], "after": count_params(analysis, kept, out)}
    report["macs"] = {"before": before[1], "after": count_macs(analysis, kept, out)}
    report["groups"] = {"prunable": len(analysis.groups), "pruned": len(plan.keep)}
    return plan, report


def pruned_copies(model: nn.Module, example_inputs: Any) -> Callable[..., nn.Module]:
    """``make(kept, bypassed=())``: a copy of ``model`` whose groups keep their first
    ``kept[group]`` indices and whose ``bypassed`` blocks are ``BypassedBlock`` (the latency
    table's calibration points and plan checks). Each copy is of ``model`` as it is when
    ``make`` runs: once ``model`` is pruned, ``make`` copies the pruned model."""

    def make(kept: dict[str, int], bypassed: tuple[str, ...] = ()) -> nn.Module:
        trial = copy_model(model)
        analysis = analyze(trial, example_inputs)
        plan = PruningPlan(example_inputs=example_inputs, traced_on=analysis)
        for g in analysis.groups:
            if g.id in kept and kept[g.id] < g.size:
                plan.keep[g.id] = list(range(kept[g.id]))
                plan.sizes[g.id] = g.size
        plan.bypass = list(bypassed)
        apply_plan(trial, plan)  # on the trace just made: one trace per copy, not two
        return trial

    return make
