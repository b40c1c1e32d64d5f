"""``compact_``: turn a channel-sparse model (zero filters, masks, zero BN scales) into a
physically smaller one that computes the same function, through the structural engine.

Masks are adopted first (``torch.nn.utils.prune`` reparametrizations and netslim's own
parametrized masks are folded into plain weights), then ``constants.py`` decides which indices
of which engine group are dead or constant and what each consumer's bias must absorb, and the
engine's ``apply_plan`` removes them. The work happens on a copy; the model is replaced only
after the copy's output matched the original's on the example inputs and random probes, so on
any failure the model is unchanged. Exact in eval mode: BatchNorm's running statistics are what
make a cut channel's constant (in train mode batch statistics would give another one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune
from torch.utils._pytree import tree_map

from netslim._runtime import paused_gc
from netslim.core import history
from netslim.core.copying import copy_model
from netslim.core.masks import canonical_name, make_permanent
from netslim.errors import ConfigError, PruningError
from netslim.measure import count_macs, count_params, latency_ms
from netslim.measure._call import call, inference
from netslim.structural import constants as C
from netslim.structural.config import Channels
from netslim.structural.engine import apply_plan, candidates
from netslim.structural.graph import flatten_tensors
from netslim.structural.groups import Analysis, Group, analyze
from netslim.structural.method import example_inputs_from
from netslim.structural.plan import PruningPlan

KIND = "compact"


def adopt_masks(model: nn.Module) -> list[str]:
    """Fold every ``torch.nn.utils.prune`` reparametrization (``weight_orig * weight_mask``)
    and every netslim mask into a plain weight; returns the tensors that were masked."""
    found = []
    for path, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                found.append((path, module, hook._tensor_name))
    for _, module, name in found:
        torch_prune.remove(module, name)
    keys = [f"{path}.{name}" if path else name for path, _, name in found]
    return keys + make_permanent(model)


def probe_inputs(example_inputs: Any, n: int, seed: int) -> list[Any]:
    """The example inputs and ``n`` random look-alikes (same shapes, mean and spread)."""
    gen = torch.Generator().manual_seed(seed)

    def fake(t: Any) -> Any:
        if not isinstance(t, Tensor) or not t.is_floating_point():
            return t
        std = float(t.std()) if t.numel() > 1 else 1.0
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float64)
        return (noise * (std or 1.0) + float(t.mean())).to(t.dtype).to(t.device)

    return [example_inputs] + [tree_map(fake, example_inputs) for _ in range(n)]


def _capture(model: nn.Module, probes: list[Any], names: set[str]) -> dict[str, list[Tensor]]:
    """Inputs of the named modules on every probe (every call, eval mode)."""
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    handles = []
    for name, mod in model.named_modules():
        if name in names:

            def hook(_m: nn.Module, args: tuple, name: str = name) -> None:
                seen[name].append(args[0].detach().clone())

            handles.append(mod.register_forward_pre_hook(hook))
    try:
        with inference(model):
            for p in probes:
                call(model, p)
    finally:
        for h in handles:
            h.remove()
    return seen


def _kept(decision: C.Decision, g: Group, indices: list[int], kind: str, reason: str) -> None:
    for i in indices:
        decision.kept.append({"group": g.id, "index": int(i), "kind": kind, "reason": reason})


def _other_member(g: Group, modules: dict[str, nn.Module]) -> str | None:
    for m in g.members:
        if C.role(modules, m) == "other":
            mod = modules.get(m.module)
            return f"{m.name} ({type(mod).__name__})"
    return None


def decide(model: nn.Module, analysis: Analysis, probes: list[Any]) -> C.Decision:
    """Which indices to remove and what each consumer's bias absorbs (nothing is changed)."""
    modules = dict(model.named_modules())
    decision = C.Decision()
    todo: list[tuple[Group, list[int], Tensor, Tensor]] = []
    for g in candidates(analysis, Channels()):
        src = C.dead_sources(analysis, g, modules)
        unused = C.ignored_by_consumers(analysis, g, modules)
        cand = (src | unused).nonzero().flatten().tolist()
        partial = (C.partly_dead(analysis, g, modules) & ~(src | unused)).nonzero().flatten()
        _kept(decision, g, partial.tolist(), "coupled", "another producer of the group computes it")
        if not cand:
            continue
        other = _other_member(g, modules)
        if other is not None:
            _kept(decision, g, cand, "unsupported", f"{other} is not a conv, linear or BatchNorm")
        elif g.width_stat:
            _kept(decision, g, cand, "normalised", "a normalisation averages over these channels")
        else:
            todo.append((g, cand, src, unused))
    consumers = {
        m.module for g, *_ in todo for m in g.members if C.role(modules, m) == "in"
    }  # fmt: skip
    xs = _capture(model, probes, consumers) if consumers else {}
    for g, cand, src, unused in todo:
        _decide_group(decision, g, cand, src, unused, modules, xs)
    return decision


def _decide_group(
    decision: C.Decision,
    g: Group,
    cand: list[int],
    src: Tensor,
    unused: Tensor,
    modules: dict[str, nn.Module],
    xs: dict[str, list[Tensor]],
) -> None:
    ins = [m for m in g.members if C.role(modules, m) == "in"]
    remaining = list(cand)
    deltas: dict[str, Tensor] = {}
    while remaining:  # a channel dropped at one consumer changes the others' deltas
        deltas, dropped = {}, False
        for m in ins:
            mod, seen = modules[m.module], xs.get(m.module, [])
            if not seen:
                _kept(decision, g, remaining, "not run", f"{m.module} did not run on the inputs")
                return
            delta, bad = C.fold_check(mod, seen, m, remaining)
            for i in bad:
                _kept(decision, g, [i], *C.why_not(mod, seen, m, i))
            if bad:
                remaining = [i for i in remaining if i not in bad]
                dropped = True
                break
            deltas[m.module] = deltas.get(m.module, 0) + delta
        if not dropped:
            break
    if len(remaining) >= g.size:  # the engine never empties a group
        _kept(decision, g, remaining[-1:], "last", "every channel is removable: one stays")
        remaining = remaining[:-1]
        return _decide_group(decision, g, remaining, src, unused, modules, xs)
    if not remaining:
        return
    decision.removed[g.id] = remaining
    decision.sizes[g.id] = g.size
    for name, delta in deltas.items():
        if bool(delta.ne(0).any()):
            decision.folds[name] = decision.folds.get(name, 0) + delta
    first = next((m for m in ins if xs.get(m.module)), None)
    for i in remaining:
        c = C.constant_of(modules[first.module], xs[first.module][0], first, i) if first else 0.0
        how = "unused" if bool(unused[i]) and not bool(src[i]) else ("dead" if c == 0 else "folded")
        decision.channels.append({"group": g.id, "index": int(i), "how": how, "constant": c})


def snap_small_channels(model: nn.Module, analysis: Analysis, zero_tol: float) -> dict[str, Any]:
    """Zero every channel whose whole unit (all parameter slices it owns in its group: rows,
    BN entries, consumer columns; the group-lasso unit) has L2 norm <= ``zero_tol``."""
    params = {canonical_name(n): p for n, p in model.named_parameters()}  # group member names
    count, largest = 0, 0.0
    with torch.no_grad():
        for g in candidates(analysis, Channels()):
            members = [m for m in g.members if m.is_param and m.name in params]
            sq = torch.zeros(g.size, dtype=torch.float64)
            for m in members:
                t = params[m.name].detach().movedim(m.dim, 0)
                valid = (m.index >= 0).nonzero().flatten()
                rows = t.index_select(0, valid.to(t.device)).reshape(len(valid), -1)
                sq.index_add_(0, m.index[valid], rows.double().pow(2).sum(1).cpu())
            norms = sq.sqrt()
            small = (norms <= zero_tol) & (norms > 0)
            if not bool(small.any()):
                continue
            count += int(small.sum())
            largest = max(largest, float(norms[small].max()))
            for m in members:
                hit = torch.isin(m.index, small.nonzero().flatten())
                t = params[m.name]
                shape = [1] * t.dim()
                shape[m.dim] = t.shape[m.dim]
                t.mul_((~hit).to(t.dtype).to(t.device).view(shape))
    return {"channels": count, "largest_norm": largest, "zero_tol": zero_tol}


def _add_bias(module: nn.Module) -> bool:
    """Give a bias-free conv/linear a zero bias (True if one was created)."""
    if getattr(module, "bias", None) is not None:
        return False
    w = module.weight
    module.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
    return True


def _outputs(model: nn.Module, probes: list[Any]) -> list[Tensor]:
    with inference(model):
        return [t.detach() for p in probes for t in flatten_tensors(call(model, p))]


def _max_diff(a: list[Tensor], b: list[Tensor]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return float("inf")
    return max((float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True)),
               default=0.0)  # fmt: skip


def _replace(model: nn.Module, work: nn.Module) -> None:
    """Make ``model`` the compacted ``work`` copy in place (submodules are the copy's)."""
    model.__class__ = work.__class__
    model.__dict__.clear()
    model.__dict__.update(work.__dict__)


def _inputs(example_inputs: Any) -> Any:
    if example_inputs is None:
        raise ConfigError("compact_ needs example inputs shaped like one real batch")
    return example_inputs if isinstance(example_inputs, (tuple, dict)) else (example_inputs,)


@paused_gc()
def compact_(
    model: nn.Module,
    example_inputs: Any,
    *,
    probes: int = 2,
    seed: int = 0,
    rtol: float = 1e-5,
    latency: bool = False,
    zero_tol: float = 0.0,
) -> dict[str, Any]:
    """Remove every exactly dead or constant channel of ``model`` in place; returns the report.

    ``probes`` random inputs beside ``example_inputs`` check that each channel is constant where
    it is consumed; the compacted model must match the original's outputs within ``rtol`` of
    their largest magnitude, else nothing changes (``PruningError``). ``zero_tol > 0`` first
    sets to exact zero every channel whose whole unit (every parameter slice it owns, as group
    lasso groups them) has L2 norm <= ``zero_tol``, for penalties that shrink channels without
    reaching zero; the equality is then checked against that snapped model and the difference
    to the original is reported as ``snapped.max_abs_diff``. ``latency=True`` times
    both models (batch of the example inputs, one thread). Rebuild optimizers afterwards: the
    model's submodules are new objects.
    """
    inputs = _inputs(example_inputs)
    if isinstance(zero_tol, bool) or not isinstance(zero_tol, (int, float)) or not zero_tol >= 0:
        raise ConfigError(f"zero_tol must be a number >= 0, got {zero_tol!r}")
    runs = probe_inputs(inputs, probes, seed)
    before = {"params": count_params(model), "macs": count_macs(model, inputs)}
    work = copy_model(model)
    adopted = adopt_masks(work)
    report: dict[str, Any] = {"adopted_masks": adopted}
    if latency:
        report["latency_ms"] = {"before": latency_ms(work, inputs).median}
    analysis = analyze(work, inputs)
    original = _outputs(model, runs)
    if zero_tol > 0:
        report["snapped"] = snap_small_channels(work, analysis, zero_tol)
    decision = decide(work, analysis, runs)
    report.update(removed_channels=decision.channels, kept=decision.kept)
    report["folded_into"] = sorted(decision.folds)
    if not decision.removed:
        report.update(params={"before": before["params"], "after": before["params"]},
                      macs={"before": before["macs"], "after": before["macs"]}, max_abs_diff=0.0)  # fmt: skip
        report["note"] = "no dead or constant channel can be removed: the model is unchanged"
        return report
    reference = _outputs(work, runs) if zero_tol > 0 else original
    created = []
    with torch.no_grad():
        for name, delta in decision.folds.items():
            mod = work.get_submodule(name)
            if _add_bias(mod):
                created.append(name)
            mod.bias.add_(delta.to(mod.bias.device, mod.bias.dtype))
    plan = PruningPlan(
        keep={g: sorted(set(range(decision.sizes[g])) - set(r)) for g, r in decision.removed.items()},
        sizes=dict(decision.sizes),
    )  # fmt: skip
    apply_plan(work, plan, inputs)
    diff = _max_diff(reference, _outputs(work, runs))
    scale = max((float(t.abs().max()) for t in reference if t.numel()), default=0.0)
    if not diff <= rtol * max(1.0, scale):
        raise PruningError(
            f"the compacted model differs from the original by {diff:.3g} (allowed "
            f"{rtol * max(1.0, scale):.3g}); nothing was changed", f"<{type(model).__name__}>"
        )  # fmt: skip
    if zero_tol > 0:
        report["snapped"]["max_abs_diff"] = _max_diff(original, _outputs(work, runs))
    _replace(model, work)
    tensors = flatten_tensors(inputs)
    payload = {
        "plan": plan.to_dict(),
        "biases": created,
        "example_shapes": [list(t.shape) for t in tensors],
        "example_dtypes": [str(t.dtype).removeprefix("torch.") for t in tensors],
    }
    if isinstance(inputs, dict):
        payload["example_keys"] = list(inputs)
    history.record(model, KIND, payload)
    report["params"] = {"before": before["params"], "after": count_params(model)}
    report["macs"] = {"before": before["macs"], "after": count_macs(model, inputs)}
    report["max_abs_diff"] = diff
    report["biases_created"] = created
    if latency:
        report["latency_ms"]["after"] = latency_ms(model, inputs).median
    return report


def replay_compact(model: nn.Module, record: dict[str, Any]) -> None:
    """``netslim.load``: adopt masks, create the biases compaction created, remove the same
    channels (the weights, folded biases included, come from the saved file)."""
    adopt_masks(model)
    for name in record.get("biases", []):
        _add_bias(model.get_submodule(name))
    apply_plan(model, PruningPlan.from_dict(record["plan"]), example_inputs_from(record))


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Counts for tables: channels removed by how (dead / folded / unused), kept by why."""
    removed: dict[str, int] = {}
    for c in report.get("removed_channels", []):
        removed[c["how"]] = removed.get(c["how"], 0) + 1
    kept: dict[str, int] = {}
    for k in report.get("kept", []):
        kept[k["kind"]] = kept.get(k["kind"], 0) + 1
    return {"removed": removed, "kept": kept}
