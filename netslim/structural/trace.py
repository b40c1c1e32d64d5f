"""Trace one forward pass at the aten level and build the channel algebra while it runs.

A ``TorchDispatchMode`` sees every op after autograd and CompositeImplicit decomposition
(``linear`` -> ``t`` + ``addmm``, ``flatten`` -> ``view``), so any Python control flow and any
output container works, and the rule set stays small. Each op's rule (``rules.py``) unifies
and refines the atoms of its tensor dims on the spot into the :class:`Graph` (``graph.py``);
running the forward (for real or on meta twins) is ``forward.py``'s job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from netslim.core.unfused import unfused_kernels
from netslim.errors import ConfigError
from netslim.structural.atoms import AlgebraConflict
from netslim.structural.forward import (
    meta_caller,
    meta_forward,
    module_stack,
    run_model,
    to_meta,
)
from netslim.structural.graph import Boundary, Graph, flatten_tensors, scale_follows_head_dim
from netslim.structural.meta_kernels import meta_shortcut
from netslim.structural.module_state import unchanged
from netslim.structural.rules import apply_module_rules, apply_rule


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = meta_shortcut(func, args, kwargs) if self.graph.on_meta else None
        if out is None:
            out = func(*args, **kwargs)
        apply_rule(self.graph, func, args, kwargs, out)
        return out


def _eval_forward(model: nn.Module, inputs: Any, graph: Graph, call: Any) -> Any:
    """``call(model, inputs)`` once in eval mode under the recorder (flags restored after)."""
    for t in flatten_tensors(inputs):
        graph.layouts[id(t)] = (t, [graph.atoms.new(s, "model input") for s in t.shape])
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with (
            torch.no_grad(),
            unfused_kernels(),
            _attention_scale_facts(graph),
            module_stack(model, graph),
            _Recorder(graph),
        ):
            return call(model, inputs)
    except AlgebraConflict as exc:  # pragma: no cover - rules catch their own conflicts
        raise ConfigError(f"tracing failed: {exc}") from exc
    except Exception as exc:
        shapes = [tuple(t.shape) for t in flatten_tensors(inputs)]
        raise ConfigError(
            f"the model does not run on the example inputs (shapes {shapes}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for m, flag in modes.items():
            m.training = flag


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")


@contextlib.contextmanager
def _attention_scale_facts(graph: Graph) -> Iterator[None]:
    """``F.scaled_dot_product_attention`` divides by sqrt(head_dim) unless given a scale. The
    fused kernels' rule sees that, but the math path (CPU with some masks, meta) folds the
    factor into a constant ``mul`` the op-level trace cannot tie to head_dim: record it at the
    call instead, by keeping head_dim whole (whole heads stay prunable). A scale the fused
    rule found stored on a module is the check forward's to confirm."""
    functional = torch.nn.functional
    inner = functional.scaled_dot_product_attention

    def sdpa(*args: Any, **kwargs: Any) -> Any:
        first = len(graph.records)
        out = inner(*args, **kwargs)
        if any(r.info.get("fixed_scales") for r in graph.records[first:]):
            return out  # a fused kernel's rule found the scale stored on a module (checked later)
        # by position or by name (diffusers' Flux passes query=, key=, value=)
        bound = dict(zip(_SDPA_ARGS, args, strict=False)) | kwargs
        q, scale = bound.get("query"), bound.get("scale")
        if not isinstance(q, torch.Tensor):
            return out
        reason = scale_follows_head_dim(scale, q.shape[-1]) if q.dim() else None
        if reason is not None and graph.has(q) and graph.lock_all(graph.dims(q)[-1:], reason):
            graph.boundaries.append(Boundary("scaled_dot_product_attention", graph.module, reason))
        return out

    functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = inner


def _trace_on_meta(model: nn.Module, example_inputs: Any) -> tuple[Graph, Any] | None:
    """The eval trace with meta twins of every parameter, buffer and input; None when the
    model's code needs real values (the caller then traces for real)."""
    graph = Graph(model)
    if any(t.is_meta for t in graph.tensors.values()):
        return None
    twins = {name: torch.empty_like(t, device="meta") for name, t in graph.tensors.items()}
    graph.trace_on(twins)
    state = {n: twins[names[0]] for names in graph.tensor_names.values() for n in names}
    try:
        with meta_forward(model):
            out = _eval_forward(model, to_meta(example_inputs), graph, meta_caller(state))
    except ConfigError:
        return None
    graph.adopt_real()
    return graph, out


def trace(model: nn.Module, example_inputs: Any, *, meta: bool = True) -> Graph:
    """Run one eval-mode forward under the recorder and return the finished ``Graph``.

    ``meta=True`` first runs that forward on meta tensors (the parameters' shapes, no data,
    no arithmetic): the algebra needs shapes and op arguments only, so this skips the model's
    FLOPs and keeps no activations alive. Code that needs values (``.item()``, NMS, a tensor
    made on the CPU inside forward) fails on meta; the trace then runs for real.

    When parameters are left unused (a head that only runs in train mode, like Inception's
    auxiliary classifier), a second, train-mode forward is traced into the same algebra, so
    pruning keeps those layers consistent and a later train-mode forward still works. The
    model's train/eval flags, buffers (BatchNorm statistics) and RNG are restored afterwards;
    nothing in it is modified: every module attribute the forwards wrote (cached tables,
    shapes) is put back (``module_state.unchanged``).
    """
    if example_inputs is None:
        raise ConfigError("structural pruning needs example inputs (a tuple of tensors)")
    with unchanged(model):
        return _trace(model, example_inputs, meta)


def _trace(model: nn.Module, example_inputs: Any, meta: bool) -> Graph:
    traced = _trace_on_meta(model, example_inputs) if meta else None
    if traced is not None:
        graph, out = traced
    else:
        graph = Graph(model)
        out = _eval_forward(model, example_inputs, graph, run_model)
    modes = {m: m.training for m in model.modules()}
    outs = [out]
    try:
        train_out = _trace_train_only(model, example_inputs, graph)
        if train_out is not None:
            outs.append(train_out)
    finally:
        for m, flag in modes.items():
            m.training = flag
    apply_module_rules(graph)
    for o in outs:
        for t in flatten_tensors(o):
            atoms = graph.dims(t) if t.dim() else []
            graph.model_outputs.append(atoms)
            for a in atoms:
                graph.atoms.lock(a, "model output")
    graph.output = out
    return graph


_SHAPE_NEUTRAL_IN_TRAIN = (
    nn.modules.batchnorm._NormBase,
    nn.modules.dropout._DropoutNd,
)


def _unused_params(graph: Graph) -> list[str]:
    used = set(graph.used)
    return [n for n, p in graph.is_param.items() if p and n not in used]


def _trace_train_only(model: nn.Module, example_inputs: Any, graph: Graph) -> Any:
    """Trace a train-mode forward when the eval forward left parameters unused; keep only the
    records of modules the eval forward never entered. Returns its output (None if skipped)."""
    if not _unused_params(graph):
        return None
    graph.n_eval = len(graph.records)
    seen = {s for r in graph.records for s in r.stack}
    saved = {n: b.detach().clone() for n, b in model.named_buffers() if b is not None}
    model.train()
    for m in model.modules():
        # their train behaviour never changes shapes, and batch statistics would fail on a
        # batch of one (or update running stats): keep them in eval
        if isinstance(m, _SHAPE_NEUTRAL_IN_TRAIN):
            m.eval()
    out = None
    failed = False
    try:
        with (
            torch.random.fork_rng(devices=[]),
            torch.no_grad(),
            unfused_kernels(),
            module_stack(model, graph),
            _Recorder(graph),
        ):
            out = run_model(model, example_inputs)
    except Exception as exc:  # e.g. detection models that need targets in train mode
        failed = True
        for name in _unused_params(graph):
            graph.boundaries.append(
                Boundary(
                    "train-mode trace",
                    name.rpartition(".")[0],
                    f"unused in eval and the train-mode forward failed ({type(exc).__name__}); "
                    "a train-mode forward of the pruned model may not work",
                )
            )
            break
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved and b is not None:
                    b.copy_(saved[n])
    extra = [r for r in graph.records[graph.n_eval :] if any(s not in seen for s in r.stack)]
    if failed:  # half-traced train-only code: keep every channel it touched
        graph.lock_all([a for r in extra for d in r.ins + r.outs for a in d], "train-only code")
    for k, r in enumerate(extra):
        r.index = graph.n_eval + k
    graph.records[graph.n_eval :] = extra
    return out
