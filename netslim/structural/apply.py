"""Physically remove pruned indices — all or nothing.

Every new tensor and attribute value is computed before the model is touched. Then tensors are
swapped (new ``nn.Parameter`` objects, ``requires_grad`` kept, tied weights stay tied) and
attributes set, each step logged; finally one forward checks that every op produced exactly the
shape the algebra predicts. Any exception rolls the log back (the old Parameter objects are put
back, so the model is bit-identical) and surfaces as a ``PruningError`` naming the module.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from netslim._runtime import one_thread
from netslim.core.names import within
from netslim.core.unfused import unfused_kernels
from netslim.errors import PruningError
from netslim.structural.attrs import Change, plan_changes
from netslim.structural.forward import (
    meta_caller,
    meta_forward,
    meta_state,
    module_stack,
    run_model,
    to_meta,
)
from netslim.structural.graph import aligned, flatten_tensors, op_key
from netslim.structural.groups import Analysis
from netslim.structural.meta_kernels import meta_shortcut
from netslim.structural.module_state import unchanged
from netslim.training.optim_state import note_replacements


def new_tensors(
    analysis: Analysis, masks: dict[int, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, list[tuple[int, torch.Tensor]]]]:
    """Pruned copies of every parameter/buffer whose shape changes (canonical names), and the
    ``[(dim, kept_index), ...]`` selections that made them (for optimizer state to follow)."""
    g = analysis.graph
    A = g.atoms
    out: dict[str, torch.Tensor] = {}
    selections: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name in dict.fromkeys(g.used):
        t = g.tensors[name]
        hit = g.layouts.get(id(t))
        if hit is None or hit[0] is not t:
            continue
        cur = t.detach()
        sel: list[tuple[int, torch.Tensor]] = []
        for d, a in enumerate(hit[1]):
            pos = A.kept_positions(a, masks)
            if pos is not None and pos.numel() != t.shape[d]:
                cur = cur.index_select(d, pos.to(t.device))
                sel.append((d, pos))
        if sel:  # index_select already made a new tensor: no second copy
            out[name] = cur.contiguous()
            selections[name] = sel
    return out, selections


class _Log:
    """Undo log of dict/attribute writes."""

    def __init__(self) -> None:
        self.steps: list[tuple[Any, str, Any, bool]] = []

    def set_item(self, d: dict, key: str, value: Any) -> None:
        self.steps.append((d, key, d[key], True))
        d[key] = value

    def set_attr(self, obj: Any, attr: str, value: Any) -> None:
        had = attr in getattr(obj, "__dict__", {})
        self.steps.append((obj, attr, getattr(obj, attr), had))
        setattr(obj, attr, value)

    def rollback(self) -> None:
        for obj, key, old, had in reversed(self.steps):
            if isinstance(obj, dict):
                obj[key] = old
            elif had:
                setattr(obj, key, old)
            else:  # it was a class attribute: drop the instance override
                delattr(obj, key)
        self.steps.clear()


def _swap(
    model: nn.Module, analysis: Analysis, name: str, new: torch.Tensor, log: _Log
) -> torch.Tensor:
    """Put ``new`` in place of tensor ``name`` (under all its tied names); returns the object
    now in the model (a new ``nn.Parameter`` for parameters)."""
    g = analysis.graph
    old = g.tensors[name]
    replacement: torch.Tensor = new
    if g.is_param[name]:
        replacement = nn.Parameter(new, requires_grad=old.requires_grad)
    for qual in g.tensor_names[id(old)]:
        where, _, leaf = qual.rpartition(".")
        mod = model.get_submodule(where)
        store = mod._parameters if leaf in mod._parameters else mod._buffers
        log.set_item(store, leaf, replacement)
    return replacement


def _apply_change(change: Change, log: _Log) -> None:
    log.set_attr(change.target, change.attr, change.new)


def _note_for_optimizers(
    model: nn.Module,
    analysis: Analysis,
    selections: dict[str, list[tuple[int, torch.Tensor]]],
    swapped: dict[str, torch.Tensor],
) -> None:
    """Tell training loops which Parameters were replaced and how, so optimizer state (momenta,
    Adam moments) is sliced like the weights instead of being reset or left stale."""
    g = analysis.graph
    notes = {
        g.tensors[name]: (new, selections[name])
        for name, new in swapped.items()
        if g.is_param[name]
    }
    if notes:
        note_replacements(model, notes)


class _Shapes(TorchDispatchMode):
    def __init__(self, stack: list[str], on_meta: bool) -> None:
        super().__init__()
        self.stack = stack
        self.on_meta = on_meta
        self.ops: list[tuple[str, list[tuple[int, ...]], str]] = []
        self.floats: list[list[float]] = []  # each op's float arguments (scales)
        self.current = ""
        self.failed: list | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.current = self.stack[-1] if self.stack else ""
        kwargs = kwargs or {}
        try:
            out = meta_shortcut(func, args, kwargs) if self.on_meta else None
            if out is None:
                out = func(*args, **kwargs)
        except Exception:
            size = args[1] if len(args) > 1 else None  # view/expand: the sizes it was asked for
            if isinstance(size, (list, tuple)) and all(isinstance(v, int) for v in size):
                self.failed = [tuple(size)]
            raise
        shapes = [tuple(t.shape) for t in flatten_tensors(out)]
        self.ops.append(
            (str(func.overloadpacket.__name__), shapes, self.stack[-1] if self.stack else "")
        )
        self.floats.append([v for v in (*args, *kwargs.values()) if type(v) is float])
        return out


# Kernels whose auxiliary outputs (saved statistics, log-sum-exp) differ between the meta and
# the CPU kernel (shaped (C,) vs (0,), or absent): only the main output is comparable with a
# meta trace.
_STATS_DIFFER_ON_META = frozenset(
    {
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "_batch_norm_with_update",
        "_batch_norm_no_update",
        "native_group_norm",
        "native_layer_norm",
    }
)


def validate(
    model: nn.Module, analysis: Analysis, kept: dict[int, int], example_inputs: Any
) -> None:
    """Run the pruned model once; every op must produce the shape the algebra predicts.

    The check forward runs where the trace ran: on meta twins of the pruned tensors when the
    trace did (the same code path, shapes only, no FLOPs), for real when the model needed real
    values to trace. Not FakeTensor propagation: fake dispatch (cache keys, decomposed batch
    norm) measured slower than the real ResNet-50 forward on CPU.
    """
    _check_shapes(analysis, kept, *_run_shapes(model, example_inputs, analysis.graph.on_meta))


def _run_shapes(model: nn.Module, example_inputs: Any, on_meta: bool) -> tuple[_Shapes, Any]:
    holder = type("_Stack", (), {})()
    holder.stack = []
    modes = {m: m.training for m in model.modules()}
    model.eval()
    rec = _Shapes(holder.stack, on_meta)
    call, inputs = run_model, example_inputs
    if on_meta:
        call, inputs = meta_caller(meta_state(model)), to_meta(example_inputs)
    failure: Exception | None = None
    try:
        with (
            meta_forward(model) if on_meta else unchanged(model),
            torch.no_grad(),
            unfused_kernels(),
            module_stack(model, holder),
            rec,
        ):
            call(model, inputs)
    except Exception as exc:
        failure = exc
    finally:
        for m, flag in modes.items():
            m.training = flag
    return rec, failure


def _check_shapes(
    analysis: Analysis, kept: dict[int, int], rec: _Shapes, failure: Exception | None
) -> None:
    g = analysis.graph
    sizes: dict[int, int] = {}

    def size(a: int) -> int:
        r = g.atoms.find(a)
        if r not in sizes:
            sizes[r] = g.atoms.new_size(r, kept)
        return sizes[r]

    positions = aligned([o[0] for o in rec.ops])
    ops = [rec.ops[i] for i in positions]
    ev = g.eval_records
    records = [ev[i] for i in aligned([r.name for r in ev])]
    for k, (r, (name, shapes, where)) in enumerate(zip(records, ops, strict=False)):
        if op_key(name) == op_key(r.name) and r.info.get("data_dependent"):
            # The rest of the forward runs on data-dependent lengths: it only has to finish.
            if failure is not None:
                raise _Invalid(
                    f"forward failed after pruning: {type(failure).__name__}: {failure}",
                    rec.current,
                ) from failure
            return
        want = [tuple(size(a) for a in out) for out in r.outs]
        if g.on_meta and r.name in _STATS_DIFFER_ON_META:
            want, shapes = want[:1], shapes[:1]
        if op_key(name) != op_key(r.name) or shapes != want:
            raise _Invalid(
                f"aten.{name} produced {shapes}, expected {want}; a constant or attribute in "
                "the code probably still holds an old size",
                where or r.module,
                r.index,
                shapes,
            )
        recomputed = [
            a
            for a, value in r.info.get("fixed_scales", ())
            if size(a) != g.atoms.size(a)
            and not any(math.isclose(f, value, rel_tol=1e-9) for f in rec.floats[positions[k]])
        ]
        if recomputed:
            raise _Invalid(
                f"aten.{name}'s scale changed with the pruned sizes: it is computed from a size "
                "at run time, not the constant the module stores",
                where or r.module,
                r.index,
                atoms=recomputed,
            )
    if failure is not None:
        culprit = records[len(ops)].index if len(ops) < len(records) else None
        raise _Invalid(
            f"forward failed after pruning: {type(failure).__name__}: {failure}",
            rec.current,
            culprit,
            rec.failed or _asked_shape(failure),
        ) from failure
    if len(ops) != len(records):
        raise _Invalid(f"the pruned forward ran {len(ops)} ops, the original {len(records)}", "")


_INVALID_SHAPE = re.compile(r"shape '\[(-?\d+(?:, -?\d+)*)\]' is invalid for input of size")


def _asked_shape(failure: Exception) -> list[tuple[int, ...]] | None:
    """The sizes a reshape asked for, from its error: ``reshape`` checks them before it
    dispatches any op, so no op saw them."""
    hit = _INVALID_SHAPE.search(str(failure))
    return [tuple(int(v) for v in hit.group(1).split(", "))] if hit else None


class _Invalid(Exception):
    def __init__(
        self,
        message: str,
        module: str,
        record: int | None = None,
        got: list | None = None,
        atoms: list[int] | None = None,
    ) -> None:
        super().__init__(message)
        self.module = module
        self.record = record
        self.got = got
        self.atoms = atoms


class CheckFailed(PruningError):
    """The check forward after pruning disagreed with the plan (the model is restored, as for
    any :class:`PruningError`). ``record``: the traced op that did not follow the new sizes
    (None when unknown), ``got``: the shapes it produced instead; the engine locks those dims
    and retries. ``atoms``: the dims to lock when they are known exactly (a scale the op
    recomputed from them)."""

    def __init__(
        self,
        message: str,
        module: str,
        record: int | None,
        got: list | None,
        atoms: list[int] | None = None,
    ) -> None:
        super().__init__(message, module)
        self.record = record
        self.got = got
        self.atoms = atoms


def _apply(
    model: nn.Module,
    analysis: Analysis,
    new: dict[str, torch.Tensor],
    changes: list[Change],
    kept: dict[int, int],
    example_inputs: Any,
) -> dict[str, torch.Tensor]:
    """Swap in the new tensors, make the attribute changes and check the forward; on any
    failure everything is rolled back. Returns the objects now in the model, by name."""
    log = _Log()
    current = ""
    swapped: dict[str, torch.Tensor] = {}
    try:
        for name, t in new.items():
            current = name.rpartition(".")[0]
            swapped[name] = _swap(model, analysis, name, t, log)
        for c in changes:
            current = c.where
            _apply_change(c, log)
        current = ""
        validate(model, analysis, kept, example_inputs)
    except _Invalid as exc:
        log.rollback()
        module = exc.module or f"<{type(model).__name__}>"
        raise CheckFailed(str(exc), module, exc.record, exc.got, exc.atoms) from exc
    except Exception as exc:
        log.rollback()
        raise PruningError(f"{type(exc).__name__}: {exc}", current or None) from exc
    return swapped


MAX_DOUBTFUL_KINDS = 6
"""Up to this many kinds of doubtful change, leaving out all but one of them is tried too."""


def _subsets(kinds: list[Any]) -> list[set[Any]]:
    """What to leave out, in order: each kind alone, then (for a few kinds) all but one, then
    all: two attributes equal to one derived size (``dim_head_qk == dim_head_v``) are both
    wrong, the head count beside them right."""
    out = [{k} for k in kinds]
    if 2 < len(kinds) <= MAX_DOUBTFUL_KINDS:
        out += [set(kinds) - {k} for k in kinds]
    if len(kinds) > 1:
        out.append(set(kinds))
    return out


def apply_masks(
    model: nn.Module, analysis: Analysis, masks: dict[int, torch.Tensor], example_inputs: Any
) -> dict[str, Any]:
    """Remove the unmasked indices from ``model`` in place; returns what changed.

    When the check forward fails and some attribute changes around the failing module were
    doubtful (an int whose value also sizes a dim that stays: HaloAttn's ``dim_head_v`` equal
    to batch x heads x blocks), kinds of them (module type, attribute) are left out, everywhere
    (:func:`_subsets`), before the first failure is raised for the engine to repair."""
    kept = {leaf: int(m.sum()) for leaf, m in masks.items()}
    with torch.no_grad(), one_thread():
        new, selections = new_tensors(analysis, masks)
    changes, notes = plan_changes(analysis, kept, new)
    try:
        swapped = _apply(model, analysis, new, changes, kept, example_inputs)
    except CheckFailed as first:
        near = [  # doubtful changes in the failing module, inside it, or around it
            c for c in changes
            if c.doubtful and (within(c.where, first.module) or within(first.module, c.where))
        ]  # fmt: skip
        kinds = list(dict.fromkeys((type(c.target), c.attr) for c in near))
        for left_out in _subsets(kinds):
            trial = [
                c for c in changes if not (c.doubtful and (type(c.target), c.attr) in left_out)
            ]
            try:
                swapped = _apply(model, analysis, new, trial, kept, example_inputs)
            except CheckFailed:
                continue
            changes = trial
            break
        else:
            raise first
    g = analysis.graph
    _note_for_optimizers(model, analysis, selections, swapped)
    shapes = {
        name: f"{tuple(g.tensors[name].shape)} -> {tuple(t.shape)}" for name, t in new.items()
    }
    return {
        "tensors": shapes,
        "attributes": [c.describe() for c in changes],
        "notes": notes,
    }
