"""Trace one forward pass at the aten level and build the channel algebra while it runs.

A ``TorchDispatchMode`` sees every op after autograd and CompositeImplicit decomposition
(``linear`` -> ``t`` + ``addmm``, ``flatten`` -> ``view``), so any Python control flow and any
output container works, and the rule set stays small. Each op's rule (``rules.py``) unifies
and refines the atoms of its tensor dims on the spot; the trace keeps only light records
(op name, module path, atoms, int args) that later stages need.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from netslim.errors import ConfigError
from netslim.structural.atoms import AlgebraConflict, Atoms
from netslim.structural.meta_kernels import meta_shortcut


@dataclass
class OpRecord:
    """What later stages need to know about one traced op."""

    index: int
    name: str
    stack: tuple[str, ...]
    kind: str
    ins: list[list[int]]
    outs: list[list[int]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.stack[-1] if self.stack else ""


@dataclass
class Boundary:
    """An op the algebra could not express; the channels it touches are kept."""

    op: str
    module: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"op": self.op, "module": self.module, "reason": self.reason}


_LEAF_TYPES = frozenset(
    {int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
     torch.memory_format, torch.Size}
)  # fmt: skip


def flatten_tensors(obj: Any) -> list[torch.Tensor]:
    """Tensors inside nested tuples/lists/dicts/ModelOutputs/dataclasses, in order."""
    out: list[torch.Tensor] = []
    seen: set[int] = set()

    def walk(o: Any) -> None:
        if type(o) in _LEAF_TYPES:  # op args are mostly these; Mapping's ABC check is slow
            return
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif id(o) in seen:
            return
        elif isinstance(o, Mapping):
            seen.add(id(o))
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            seen.add(id(o))
            for v in o:
                walk(v)
        elif hasattr(o, "__dataclass_fields__"):
            seen.add(id(o))
            for name in o.__dataclass_fields__:
                walk(getattr(o, name, None))

    walk(obj)
    return out


class Graph:
    """Atoms for every traced tensor dim, plus the records of the ops that produced them."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.atoms = Atoms()
        self.layouts: dict[int, tuple[torch.Tensor, list[int]]] = {}
        self.records: list[OpRecord] = []
        self.boundaries: list[Boundary] = []
        self.stack: list[str] = []
        # id(tensor) -> canonical qualified names (params first, then buffers; tied -> many)
        self.tensor_names: dict[int, list[str]] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        # name -> the object the traced forward sees: the tensor itself, or its meta twin
        self.traced: dict[str, torch.Tensor] = self.tensors
        self.on_meta = False
        self.is_param: dict[str, bool] = {}
        self._by_storage: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            self._register(name, p, True)
        for name, b in model.named_buffers(remove_duplicate=False):
            if b is not None:
                self._register(name, b, False)
        self.used: list[str] = []  # canonical names of params/buffers met in the trace
        self.model_outputs: list[list[int]] = []
        # records[:n_eval] are the eval forward, op for op (validation and the oracle replay
        # it); later records come from modules that run only in train mode (attrs need them)
        self.n_eval: int | None = None

    def trace_on(self, twins: dict[str, torch.Tensor]) -> None:
        """The forward will see ``twins[name]`` (meta tensors) in place of the parameters."""
        self._real_names = self.tensor_names
        self.tensor_names = {id(twins[ns[0]]): ns for ns in self._real_names.values()}
        self.traced = twins
        self.on_meta = True

    def adopt_real(self) -> None:
        """After a meta trace: key every layout and name by the real tensors again, so later
        stages (and a second, real train-mode trace) see the model's own parameters."""
        for name, real in self.tensors.items():
            twin = self.traced[name]
            hit = self.layouts.pop(id(twin), None)
            if hit is not None and hit[0] is twin:
                self.layouts[id(real)] = (real, hit[1])
        self.tensor_names = self._real_names
        self.traced = self.tensors

    @property
    def eval_records(self) -> list[OpRecord]:
        return self.records if self.n_eval is None else self.records[: self.n_eval]

    def _register(self, name: str, t: torch.Tensor, is_param: bool) -> None:
        names = self.tensor_names.setdefault(id(t), [])
        names.append(name)
        if len(names) == 1:
            self.tensors[name] = t
            self.is_param[name] = is_param
            with contextlib.suppress(RuntimeError):
                self._by_storage.setdefault(t.untyped_storage().data_ptr(), []).append(name)

    # -- layouts -------------------------------------------------------------------------
    def dims(self, t: torch.Tensor) -> list[int]:
        """Atoms of ``t``; unseen tensors are parameters/buffers (free) or constants (locked)."""
        hit = self.layouts.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        names = self.tensor_names.get(id(t))
        if names is not None and self.traced[names[0]] is t:
            name = names[0]
            integral = not (t.is_floating_point() or t.is_complex())
            lock = "integer buffer (indices/masks)" if integral else None
            atoms = [self.atoms.new(s, lock) for s in t.shape]
            self.used.append(name)
        else:
            atoms = [self.atoms.new(s, "constant") for s in t.shape]
            self._check_alias(t)
        self.layouts[id(t)] = (t, atoms)
        return atoms

    def _check_alias(self, t: torch.Tensor) -> None:
        """A tensor that shares storage with a parameter but was made outside the trace
        (a cached view) would go stale after pruning: keep that parameter whole."""
        if t.is_meta:  # made inside the meta forward: it cannot alias a real parameter
            return
        try:
            ptr = t.untyped_storage().data_ptr()
        except RuntimeError:
            return
        for name in self._by_storage.get(ptr, ()):
            p = self.tensors[name]
            if p.numel() == 0:
                continue
            for a in self.dims(p):
                self.atoms.lock(a, f"{name} is used through an alias made outside forward")
            self.boundaries.append(
                Boundary("alias", name.rpartition(".")[0], "parameter used through a cached view")
            )

    def set_out(self, t: torch.Tensor, atoms: list[int]) -> None:
        """Give ``t`` its atoms; for in-place results (same object) unify with the old ones."""
        hit = self.layouts.get(id(t))
        if hit is not None and hit[0] is t:
            for a, b in zip(hit[1], atoms, strict=True):
                self.atoms.unify(a, b)
            return
        if id(t) in self.tensor_names and self.traced[self.tensor_names[id(t)][0]] is t:
            old = self.dims(t)
            for a, b in zip(old, atoms, strict=True):
                self.atoms.unify(a, b)
            return
        self.layouts[id(t)] = (t, list(atoms))

    def has(self, t: torch.Tensor) -> bool:
        hit = self.layouts.get(id(t))
        return hit is not None and hit[0] is t

    def lock_all(self, atoms: list[int], reason: str) -> bool:
        """Lock atoms; True when one of them was still free (worth reporting)."""
        free = False
        A = self.atoms
        for a in atoms:
            if not free and any(not A.is_locked(x) and A.size(x) > 1 for x in A.leaves(a)):
                free = True
            A.lock(a, reason)
        return free

    @property
    def module(self) -> str:
        return self.stack[-1] if self.stack else ""


# Ops that some runs issue and others do not: detach of a lifted constant, and the copies that
# reshape/contiguous make only when a tensor is not contiguous (which pruning can change, e.g.
# when a dim becomes 1). Sequences of traced ops are compared with these filtered out.
NOISE_OPS = frozenset(
    {
        "detach",
        "alias",
        "lift_fresh",
        "lift_fresh_copy",
        "_local_scalar_dense",
        "clone",
        "_cuda_version",  # torchvision.ops asks which CUDA it was built with, sometimes
    }
)
SAME_OP = {"_unsafe_view": "view", "_reshape_alias": "view"}


# Ops whose output *length* depends on the values (detections kept by NMS, non-zero positions):
# after pruning the values change, so from such an op on the original run's shapes say nothing.
DATA_DEPENDENT_OPS = frozenset(
    {"nms", "nonzero", "masked_select", "unique", "_unique2", "unique_dim", "argwhere"}
)


def data_dependent(name: str, args: tuple) -> bool:
    """Does this call's output length depend on values? Also ``x[mask]`` (``aten.index`` with
    a boolean index: detection heads keep the scores above a threshold that way)."""
    if name in DATA_DEPENDENT_OPS:
        return True
    if name == "index" and len(args) > 1 and isinstance(args[1], (list, tuple)):
        return any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]
        )
    return False


def op_key(name: str) -> str:
    return SAME_OP.get(name, name)


def aligned(names: list[str]) -> list[int]:
    """Positions of the ops that take part in op-by-op comparisons between two runs."""
    return [i for i, n in enumerate(names) if n not in NOISE_OPS]


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = meta_shortcut(func, args, kwargs) if self.graph.on_meta else None
        if out is None:
            out = func(*args, **kwargs)
        from netslim.structural.rules import apply_rule

        apply_rule(self.graph, func, args, kwargs, out)
        return out


@contextlib.contextmanager
def _module_stack(model: nn.Module, graph: Any) -> Iterator[None]:
    """Keep ``graph.stack`` = the module paths being run, innermost last.

    Two global hooks and a name table instead of two hooks per module: registering hundreds of
    per-module handles cost more than the ops of a ResNet-50 forward."""
    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )

    names = {id(m): n for n, m in model.named_modules()}
    alive = list(model.modules())  # ids stay unique while the table is in use
    stack = graph.stack

    def pre(mod: nn.Module, _a: Any) -> None:
        name = names.get(id(mod))
        if name is not None:
            stack.append(name)

    def post(mod: nn.Module, _a: Any, _o: Any) -> None:
        name = names.get(id(mod))
        if name is not None and stack and stack[-1] == name:
            stack.pop()

    handles = [
        register_module_forward_pre_hook(pre),
        register_module_forward_hook(post, always_call=True),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        del alive


@contextlib.contextmanager
def _no_fastpaths() -> Iterator[None]:
    """Fused kernels (nn.MultiheadAttention's fast path) hide the structure: trace the
    decomposed path instead; the pruned model may use the fast path again."""
    mha = getattr(torch.backends, "mha", None)
    old = mha.get_fastpath_enabled() if mha is not None else None
    if mha is not None:
        mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(old)


def run_model(model: nn.Module, example_inputs: Any) -> Any:
    """Call ``model`` on example inputs: a tuple is spread, a dict is passed as kwargs."""
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, torch.Tensor):
        return model(example_inputs)
    return model(*example_inputs)


def _eval_forward(model: nn.Module, inputs: Any, graph: Graph, call: Any) -> Any:
    """``call(model, inputs)`` once in eval mode under the recorder (flags restored after)."""
    for t in flatten_tensors(inputs):
        graph.layouts[id(t)] = (t, [graph.atoms.new(s, "model input") for s in t.shape])
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with (
            torch.no_grad(),
            _no_fastpaths(),
            _attention_scale_facts(graph),
            _module_stack(model, graph),
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


def scale_follows_head_dim(scale: float | None, head_dim: int) -> str | None:
    """Why attention with this ``scale`` must keep head_dim whole, or None: the default scale
    is 1/sqrt(head_dim), and an explicit one equal to it may be recomputed from the size at run
    time (pruning inside heads would then change it; whole heads stay prunable)."""
    if scale is None:
        return "the default SDPA scale is 1/sqrt(head_dim)"
    if math.isclose(float(scale), 1 / math.sqrt(head_dim), rel_tol=1e-6):
        return "SDPA scale equals 1/sqrt(head_dim)"
    return None


@contextlib.contextmanager
def _attention_scale_facts(graph: Graph) -> Iterator[None]:
    """``F.scaled_dot_product_attention`` divides by sqrt(head_dim) unless given a scale. The
    fused kernels' rule sees that, but the math path (CPU with some masks, meta) folds the
    factor into a constant ``mul`` the op-level trace cannot tie to head_dim: record it at the
    call instead, by keeping head_dim whole (whole heads stay prunable)."""
    functional = torch.nn.functional
    inner = functional.scaled_dot_product_attention

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = inner(q, k, v, *args, **kwargs)
        scale = kwargs.get("scale", args[3] if len(args) > 3 else None)
        reason = scale_follows_head_dim(scale, q.shape[-1]) if q.dim() else None
        if reason is not None and graph.has(q) and graph.lock_all(graph.dims(q)[-1:], reason):
            graph.boundaries.append(Boundary("scaled_dot_product_attention", graph.module, reason))
        return out

    functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = inner


@contextlib.contextmanager
def _cpu_attention_on_meta() -> Iterator[None]:
    """On meta tensors ``F.scaled_dot_product_attention`` picks the math backend, while the
    CPU run of the same code picks the fused flash kernel: a different op sequence, and the
    fused op is where the trace learns that the scale follows head_dim. While tracing on meta,
    ask the CPU which backend it would use (on empty stand-ins of the same shapes) and call
    that kernel on meta. (Patched on ``torch.nn.functional``, where torch's own attention,
    Hugging Face and timm look it up at call time.)"""
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention

    def sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = _flash_on_meta(*args, **kwargs)
        return original(*args, **kwargs) if out is None else out

    functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


def _flash_on_meta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor | None:
    if not q.is_meta or (attn_mask is not None and attn_mask.dtype == torch.bool):
        return None  # the generic path (a mismatch shows in validation, then a real trace)
    with _disable_current_modes():
        stand_in = [torch.empty(t.shape, dtype=t.dtype) for t in (q, k, v)]
        mask = None if attn_mask is None else torch.empty(attn_mask.shape, dtype=attn_mask.dtype)
        choice = torch._fused_sdp_choice(
            *stand_in, mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
        )
    if choice != torch.nn.attention.SDPBackend.FLASH_ATTENTION.value:
        return None
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return flash(q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


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


def meta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A meta twin for every parameter and buffer name of ``model`` (tied names share one)."""
    twins: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    named = (
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    )
    for name, t in named:
        if t is not None:
            if id(t) not in twins:
                twins[id(t)] = torch.empty_like(t, device="meta")
            state[name] = twins[id(t)]
    return state


def to_meta(inputs: Any) -> Any:
    from torch.utils._pytree import tree_map

    return tree_map(lambda v: v.to("meta") if isinstance(v, torch.Tensor) else v, inputs)


def meta_caller(state: dict[str, torch.Tensor]) -> Any:
    """``call(model, inputs)`` that runs the forward with ``state`` in place of the model's
    own tensors (the model object itself is not modified)."""
    from torch.func import functional_call

    def call(m: nn.Module, x: Any) -> Any:
        if isinstance(x, Mapping):
            return functional_call(m, state, (), dict(x))
        return functional_call(m, state, x if isinstance(x, tuple) else (x,))

    return call


@contextlib.contextmanager
def meta_forward(model: nn.Module) -> Iterator[None]:
    """Around a forward on meta tensors: the CPU's attention kernel choice, and nothing the
    forward cached on the modules (rotary tables, masks) left behind as meta tensors."""
    saved = _attribute_snapshot(model)
    try:
        with _cpu_attention_on_meta():
            yield
    finally:
        _drop_meta_leftovers(model, saved)


def _attribute_snapshot(model: nn.Module) -> dict[nn.Module, dict[str, Any]]:
    return {m: dict(vars(m)) for m in model.modules()}


def _drop_meta_leftovers(model: nn.Module, saved: dict[nn.Module, dict[str, Any]]) -> None:
    """Undo what a meta forward cached on the modules (rotary tables, attention-bias caches):
    a meta tensor left behind would break the next real forward."""
    for m, before in saved.items():
        now = vars(m)
        for key in list(now):
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            value = now[key]
            if key not in before:
                if _holds_meta(value):
                    del now[key]
            elif value is not before[key] and _holds_meta(value):
                now[key] = before[key]
            elif isinstance(value, dict):
                for k in [k for k, v in value.items() if _holds_meta(v)]:
                    del value[k]


def _holds_meta(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_meta
    if isinstance(value, (list, tuple)):
        return any(_holds_meta(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_meta(v) for v in value.values())
    return False


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
    nothing in it is modified.
    """
    if example_inputs is None:
        raise ConfigError("structural pruning needs example inputs (a tuple of tensors)")
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
    from netslim.structural.rules import apply_module_rules

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
            _no_fastpaths(),
            _module_stack(model, graph),
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
