"""Per-op channel rules: how each aten op relates the atoms of its inputs and outputs.

A rule is ``rule(ctx: OpContext) -> None``; it reads ``ctx.arg(name)``/``ctx.dims(t)`` and
calls ``ctx.out(t, atoms)`` for each output tensor, using ``ctx.unify``/``ctx.refine``/``ctx.new``.
Ops without a rule are *boundaries*: every free atom they touch is locked and reported, so an
unknown op can only make pruning more conservative, never wrong. Users extend the set with
:func:`register_rule` (keyed by the aten op name without overload, e.g. ``"my_ns::my_op"`` or
``"roll"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from netslim.structural.atoms import CAT, PROD, AlgebraConflict
from netslim.structural.graph import (
    Boundary,
    Graph,
    OpRecord,
    data_dependent,
    flatten_tensors,
    hf_config,
    scale_follows_head_dim,
)

Rule = Callable[["OpContext"], None]
_RULES: dict[str, Rule] = {}


def register_rule(*names: str) -> Callable[[Rule], Rule]:
    """Decorator: ``@register_rule("my_ns::my_op") def rule(ctx): ...`` (see module doc)."""

    def wrap(fn: Rule) -> Rule:
        for n in names:
            _RULES[n] = fn
        return fn

    return wrap


class OpContext:
    """One op as a rule sees it: bound arguments, outputs, and the algebra helpers."""

    def __init__(self, graph: Graph, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.g = graph
        self.func = func
        self.name = str(func.overloadpacket.__name__)
        self.args = args
        self.kwargs = kwargs
        self.result = out
        self.outputs = flatten_tensors(out)
        self.bound: dict[str, Any] = {}
        for i, a in enumerate(func._schema.arguments):
            if i < len(args):
                self.bound[a.name] = args[i]
            elif a.name in kwargs:
                self.bound[a.name] = kwargs[a.name]
            elif a.has_default_value():
                self.bound[a.name] = a.default_value
        self.kind = "op"
        self.info: dict[str, Any] = {}

    # -- reading -------------------------------------------------------------------------
    def arg(self, name: str, default: Any = None) -> Any:
        v = self.bound.get(name, default)
        return default if v is None else v

    def pos(self, i: int, default: Any = None) -> Any:
        return self.args[i] if i < len(self.args) else default

    def tensor_args(self) -> list[torch.Tensor]:
        return flatten_tensors((self.args, self.kwargs))

    def dims(self, t: torch.Tensor) -> list[int]:
        return self.g.dims(t)

    # -- algebra -------------------------------------------------------------------------
    def new(self, size: int, lock: str | None = None) -> int:
        return self.g.atoms.new(size, lock)

    def unify(self, a: int, b: int) -> None:
        self.g.atoms.unify(a, b)

    def refine(self, a: int, kind: str, parts: list[int]) -> None:
        self.g.atoms.refine(a, kind, parts)

    def lock(self, atoms: list[int], reason: str, report: bool = True) -> None:
        """Keep these atoms whole; report it when a still-free atom was affected."""
        if self.g.lock_all(atoms, reason) and report:
            self.g.boundaries.append(Boundary(self.name, self.g.module, reason))

    def out(self, t: torch.Tensor, atoms: list[int]) -> None:
        self.g.set_out(t, atoms)

    def out_view(self, t: torch.Tensor, atoms: list[int]) -> None:
        """The output of a view op: for the in-place ones (``transpose_``, ``t_``: the output
        is the input object, its dims reordered) the new layout replaces the input's."""
        if self.name.endswith("_") and self.g.has(t):
            self.g.layouts[id(t)] = (t, list(atoms))
        else:
            self.g.set_out(t, atoms)

    def out_like(self, t: torch.Tensor, lock: str) -> None:
        self.g.set_out(t, [self.new(s, lock) for s in t.shape])


def _norm_dim(d: int, n: int) -> int:
    return d + n if d < 0 else d


def apply_rule(graph: Graph, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """Run the rule for ``func``; on conflict or error lock everything the op touched."""
    ctx = OpContext(graph, func, args, kwargs, out)
    rule = _RULES.get(ctx.name) or _RULES.get(str(func.overloadpacket._qualified_op_name))
    if rule is None and (torch.Tag.pointwise in func.tags or _pointwise_inplace(ctx.name)):
        rule = elementwise
    if rule is None:
        rule = unknown
    from_numbers = all(_is_number(graph, t) for t in ctx.tensor_args())
    try:
        rule(ctx)
    except (AlgebraConflict, IndexError, ValueError, TypeError, RuntimeError) as exc:
        touched = [a for t in ctx.tensor_args() + ctx.outputs for a in graph.dims(t)]
        ctx.lock(touched, f"{type(exc).__name__}: {exc}")
    for t in ctx.outputs:
        if not graph.has(t):
            ctx.out_like(t, f"output of {ctx.name}")
    if data_dependent(ctx.name, args):
        ctx.info["data_dependent"] = True
    if from_numbers and ctx.outputs and all(t.dim() == 0 for t in ctx.outputs):
        graph.constants.update((id(t), t) for t in ctx.outputs)
    graph.records.append(
        OpRecord(
            index=len(graph.records),
            name=ctx.name,
            stack=tuple(graph.stack),
            kind=ctx.kind,
            ins=[list(graph.dims(t)) for t in ctx.tensor_args()],
            outs=[list(graph.dims(t)) for t in ctx.outputs],
            info=ctx.info,
        )
    )


def _is_number(graph: Graph, t: torch.Tensor) -> bool:
    """A scalar made from Python numbers: a wrapped number, or computed from such only."""
    if id(t) in graph.constants:
        return graph.constants[id(t)] is t
    return t.dim() == 0 and not graph.has(t) and not graph.is_state(t)


def _pointwise_inplace(name: str) -> bool:
    """``relu_``, ``hardswish_``: in-place twins of pointwise ops are not always tagged."""
    if not name.endswith("_") or name.startswith("_"):
        return False
    base = getattr(torch.ops.aten, name[:-1], None)
    if base is None:
        return False
    try:
        return any(torch.Tag.pointwise in getattr(base, o).tags for o in base.overloads())
    except (AttributeError, RuntimeError):
        return False


# --- boundaries and trivial ops ----------------------------------------------------------
def unknown(ctx: OpContext) -> None:
    """No rule: keep every channel this op touches (reported as a boundary)."""
    touched = [a for t in ctx.tensor_args() for a in ctx.dims(t)]
    ctx.lock(touched, f"no rule for aten.{ctx.name}")
    for t in ctx.outputs:
        ctx.out_like(t, f"output of unsupported aten.{ctx.name}")


@register_rule(
    "alias", "detach", "clone", "contiguous", "_to_copy", "lift_fresh", "lift_fresh_copy",
    "_conj", "resolve_conj", "resolve_neg", "dropout", "feature_dropout", "alpha_dropout",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "_to_dense", "to_dense", "empty_strided",
)  # fmt: skip
def identity(ctx: OpContext) -> None:
    src = ctx.tensor_args()
    if not src:
        return unknown(ctx)
    for t in ctx.outputs:
        if tuple(t.shape) == tuple(src[0].shape):
            ctx.out(t, ctx.dims(src[0]))


@register_rule("as_strided", "as_strided_", "as_strided_copy")
def restride(ctx: OpContext) -> None:
    """A restride that keeps the size and has at most one dim longer than 1 maps every element
    to itself (strides of length-1 dims are never used): e.g. the channels-last restride of a
    globally pooled ``(N, C, 1, 1)`` map with N = 1. Anything else reinterprets memory."""
    x, size = ctx.args[0], ctx.args[1]
    offset = ctx.pos(3)
    plain = list(size) == list(x.shape) and sum(n > 1 for n in size) <= 1
    if not plain or offset not in (None, x.storage_offset()):
        return unknown(ctx)
    for t in ctx.outputs:
        ctx.out(t, ctx.dims(x))


@register_rule(
    "bernoulli_", "uniform_", "normal_", "exponential_", "geometric_", "log_normal_", "cauchy_",
    "random_", "zero_", "fill_",
)  # fmt: skip
def refill(ctx: OpContext) -> None:
    """In-place fills and random draws (a dropout mask drawn into ``empty_like(x)``): every
    element is set on its own, so the tensor keeps its dims (a value tensor broadcasts)."""
    elementwise(ctx)


@register_rule("native_dropout")
def native_dropout(ctx: OpContext) -> None:
    x = ctx.arg("input")
    for t in ctx.outputs:
        ctx.out(t, ctx.dims(x))


@register_rule("zeros", "ones", "full", "new_zeros", "new_ones", "new_full")
def constant_fill(ctx: OpContext) -> None:
    """A tensor of one value everywhere (an RNN's zero initial state, an accumulator): as for
    an expanded dim, any index of any dim may go, so its dims are free. The size written in the
    code follows the int attribute that holds it (``_reshape_constants``: nn.LSTM's
    ``hidden_size``); a literal is caught by the check forward, which keeps what it touches."""
    size = ctx.args[1] if ctx.name.startswith("new_") else ctx.args[0]
    o = ctx.outputs[0]
    ints = [int(s) for s in size] if isinstance(size, list | tuple) else []
    if len(ints) == o.dim():
        ctx.kind = "reshape"
        ctx.info["ints"] = ints
    ctx.out(o, [ctx.new(s) for s in o.shape])


@register_rule(
    "arange", "empty", "scalar_tensor", "randn", "rand", "randint",
    "new_empty", "linspace", "eye", "tensor",
    "_local_scalar_dense", "sym_size", "sym_numel", "is_nonzero", "equal", "_assert_async",
    "_assert_tensor_metadata", "randperm", "bernoulli",
)  # fmt: skip
def factory(ctx: OpContext) -> None:
    """Fresh tensors whose sizes come from Python ints: their dims are fixed geometry."""
    for t in ctx.outputs:
        ctx.out_like(t, f"created by aten.{ctx.name}")


# --- elementwise ---------------------------------------------------------------------------
def broadcast(ctx: OpContext, tensors: list[torch.Tensor], shape: tuple[int, ...]) -> list[int]:
    """Atoms of a broadcast result: dims of equal size unify; size-1 (broadcast) dims don't."""
    n = len(shape)
    res: list[int | None] = [None] * n
    for t in tensors:
        if t.dim() == 0:
            continue
        off = n - t.dim()
        if off < 0:
            raise ValueError("operand has more dims than the result")
        for k, (s, a) in enumerate(zip(t.shape, ctx.dims(t), strict=True)):
            if s != shape[off + k]:
                continue
            cur = res[off + k]
            if cur is None:
                res[off + k] = a
            elif s != 1:
                try:
                    ctx.unify(cur, a)
                except AlgebraConflict as exc:
                    # the operands split this dim differently (MaxViT's grid and block
                    # partitions of one spatial dim): keep it whole, the others still unify
                    ctx.lock([cur, a], f"AlgebraConflict: {exc}")
    return [r if r is not None else ctx.new(shape[i], "broadcast") for i, r in enumerate(res)]


def follow_broadcast(
    ctx: OpContext, operand: torch.Tensor, dims: list[int], shape: tuple[int, ...]
) -> None:
    """An operand added into a result it broadcasts to (a bias, an attention mask): each of
    its dims of the result's size follows that dim; a size-1 dim broadcasts and constrains
    nothing (a padding mask's head dim, a bias shared by every head)."""
    offset = len(dims) - operand.dim()
    for i, (size, atom) in enumerate(zip(operand.shape, ctx.dims(operand), strict=True)):
        if size == shape[offset + i] != 1:
            ctx.unify(atom, dims[offset + i])


_SCALED = ("mul", "div", "mul_", "div_")


def elementwise(ctx: OpContext) -> None:
    tensors = ctx.tensor_args()
    for o in ctx.outputs:
        ctx.out(o, broadcast(ctx, tensors, tuple(o.shape)))
    if ctx.name in _SCALED:
        _check_size_scale(ctx, tensors)


def _check_size_scale(ctx: OpContext, tensors: list[torch.Tensor]) -> None:
    """A float like 1/sqrt(head_dim) multiplying a tensor may be recomputed from a size at run
    time; pruning that dim would change it, so keep the dim (conservative). A stored scalar
    counts too: Gemma's ``embed_scale`` buffer is sqrt(hidden_size), recomputed from the config
    when the model is built again. On a meta trace its value is read from the model. A Python
    float that a module keeps as an attribute (``self.scale = head_dim ** -0.5``) is a
    constant the pruned model keeps: the dim stays prunable, and the check forward confirms
    the op still receives that value (``fixed_scales``)."""
    python = [
        float(v) for v in ctx.args[1:] if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    scalars = list(python)
    for t in tensors:  # wrapped numbers, scalars computed from numbers, scalar buffers
        if t.dim() == 0 and t.numel() == 1 and (_is_number(ctx.g, t) or ctx.g.is_state(t)):
            value = ctx.g.tensors[ctx.g.tensor_names[id(t)][0]] if ctx.g.is_state(t) else t
            if not value.is_meta:
                scalars.append(float(value))
    if not scalars or not tensors:
        return
    x = tensors[0]
    if x.dim() == 0:
        return
    # attention-style scaling acts on the last dim; a scale after a product (RAFT's
    # correlation ``corr / torch.sqrt(torch.tensor(C))``) on the dim that product summed over;
    # a mean or RMS written by hand (``x.pow(2).sum(-1) / d``, ``x.norm(dim=-1) * d ** -0.5``)
    # on the dim the sum or norm reduced: the masked reference keeps the old ``d``
    summed = _reduced_into(ctx, x)
    for a in [ctx.dims(x)[-1], *_contracted_here(ctx), *summed]:
        s = ctx.g.atoms.size(a)
        if s < 8 or ctx.g.atoms.is_locked(a):
            continue
        for v in scalars:
            if v in (0, 1, -1) or v != v:
                continue
            cands = (1 / math.sqrt(s), math.sqrt(s), 1 / s) + ((s,) if a in summed else ())
            if any(math.isclose(abs(v), c, rel_tol=1e-6) for c in cands):
                if v in python and _stored_constant(ctx, v):
                    ctx.info.setdefault("fixed_scales", []).append((a, v))
                else:
                    ctx.lock([a], f"scale {v:g} looks derived from size {s}")


def _stored_constant(ctx: OpContext, value: float) -> bool:
    """``value`` is a float attribute of a module running this op, set when it was built, and
    no module on the way holds a Hugging Face config (``from_pretrained`` would recompute it
    from the new sizes). Pruning keeps such a constant, so the pruned op computes what the
    masked one does."""
    model = ctx.g.model
    mods = [model, *(model.get_submodule(w) for w in ctx.g.stack if w)]
    if any(hf_config(m) is not None for m in mods):
        return False
    return any(
        type(v) is float and math.isclose(v, value, rel_tol=1e-9)
        for m in mods
        for v in vars(m).values()
    )


def _reduced_into(ctx: OpContext, x: torch.Tensor) -> list[int]:
    """The dims a recent sum or norm of this module reduced to make ``x``."""
    atoms = ctx.g.atoms
    mine = [atoms.find(a) for a in ctx.dims(x)]
    for rec in reversed(ctx.g.records[-8:]):
        if rec.kind == "stat" and rec.outs and [atoms.find(a) for a in rec.outs[0]] == mine:
            if rec.info.get("stat") in ("sum", "nansum", "vector_norm"):
                return [rec.ins[0][k] for k in rec.info["dims"]]
            return []
    return []


def _contracted_here(ctx: OpContext) -> list[int]:
    """The dims the latest matrix product of the running module summed over."""
    atoms, stack = ctx.g.atoms, tuple(ctx.g.stack)
    for rec in reversed(ctx.g.records):
        if rec.stack != stack:
            break
        if rec.kind == "matmul":
            kept = {atoms.find(a) for d in rec.outs for a in d}
            return [a for m in rec.info["macs"] for a in m if atoms.find(a) not in kept]
    return []


register_rule(
    "hardswish", "hardswish_", "log_sigmoid", "relu6", "relu6_",
    "hardtanh", "hardtanh_", "elu", "elu_", "leaky_relu", "leaky_relu_", "silu_", "mish_",
    "masked_fill", "masked_fill_", "clamp_", "nan_to_num", "nan_to_num_",
)(elementwise)  # fmt: skip


@register_rule("copy_")
def copy_(ctx: OpContext) -> None:
    dst, src = ctx.arg("self"), ctx.arg("src")
    ctx.out(dst, broadcast(ctx, [dst, src], tuple(dst.shape)))


@register_rule("where")
def where(ctx: OpContext) -> None:
    elementwise(ctx)


# --- shape ops -------------------------------------------------------------------------------
def reshape_atoms(
    ctx: OpContext, ins: list[int], ishape: list[int], oshape: list[int]
) -> list[int]:
    """Match blocks of input dims and output dims with equal products; each block becomes one
    product atom, refined into the output factors (e.g. 768 -> 12 x 64)."""
    out: list[int | None] = [None if s != 1 else ctx.new(1) for s in oshape]
    ii = [i for i, s in enumerate(ishape) if s != 1]
    oo = [j for j, s in enumerate(oshape) if s != 1]
    i = j = 0
    while i < len(ii) or j < len(oo):
        bi, bo = [ii[i]], [oo[j]]
        pi, po = ishape[ii[i]], oshape[oo[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                bi.append(ii[i])
                pi *= ishape[ii[i]]
                i += 1
            else:
                bo.append(oo[j])
                po *= oshape[oo[j]]
                j += 1
        in_atoms = [ins[k] for k in bi]
        try:
            parts = _reshape_block(ctx, in_atoms, pi, [oshape[k] for k in bo])
            for k, a in zip(bo, parts, strict=True):
                out[k] = a
        except AlgebraConflict as exc:
            # blocks are independent index spaces: a conflict in one (Swin's windows split
            # the same spatial dim as 8 x 7, its patch merging as 28 x 2) keeps that block
            # whole and leaves the others (the channels beside it) free
            ctx.lock(in_atoms, f"AlgebraConflict: {exc}")
            for k in bo:
                out[k] = ctx.new(oshape[k], f"reshaped from a locked block of {ctx.name}")
    return [a for a in out if a is not None]


def _reshape_block(ctx: OpContext, ins: list[int], size: int, shape: list[int]) -> list[int]:
    """The output atoms of one block of a reshape: input dims whose product is ``size``
    becoming output dims ``shape`` of the same product."""
    block = ins[0] if len(ins) == 1 else ctx.new(size)
    if len(ins) > 1:
        ctx.refine(block, PROD, ins)
    if len(shape) == 1:
        return [block]
    parts = [ctx.new(s) for s in shape]
    ctx.refine(block, PROD, parts)
    return parts


@register_rule("view", "_unsafe_view", "reshape", "_reshape_alias", "view_copy", "unflatten")
def view(ctx: OpContext) -> None:
    x = ctx.tensor_args()[0]
    o = ctx.outputs[0]
    ctx.kind = "reshape"
    size = ctx.pos(1)
    if isinstance(size, (list, tuple)):
        ctx.info["ints"] = [int(s) for s in size]
    if x.numel() == 0:
        return unknown(ctx)
    ctx.out(o, reshape_atoms(ctx, ctx.dims(x), list(x.shape), list(o.shape)))


@register_rule("permute")
def permute(ctx: OpContext) -> None:
    x = ctx.arg("self")
    d = ctx.dims(x)
    order = [_norm_dim(k, x.dim()) for k in ctx.arg("dims")]
    ctx.out(ctx.outputs[0], [d[k] for k in order])


@register_rule("transpose", "swapaxes", "swapdims", "transpose_", "swapaxes_", "swapdims_")
def transpose(ctx: OpContext) -> None:
    x = ctx.args[0]
    d = list(ctx.dims(x))
    a, b = _norm_dim(ctx.args[1], x.dim()), _norm_dim(ctx.args[2], x.dim())
    d[a], d[b] = d[b], d[a]
    ctx.out_view(ctx.outputs[0], d)


@register_rule("t", "numpy_T", "t_")
def t(ctx: OpContext) -> None:
    x = ctx.args[0]
    ctx.out_view(ctx.outputs[0], list(reversed(ctx.dims(x))))


@register_rule("unsqueeze")
def unsqueeze(ctx: OpContext) -> None:
    x = ctx.args[0]
    d = list(ctx.dims(x))
    d.insert(_norm_dim(ctx.args[1], x.dim() + 1), ctx.new(1))
    ctx.out(ctx.outputs[0], d)


@register_rule("squeeze")
def squeeze(ctx: OpContext) -> None:
    x = ctx.args[0]
    d = ctx.dims(x)
    if len(ctx.args) > 1:
        dims = ctx.args[1]
        dims = [dims] if isinstance(dims, int) else list(dims)
        drop = {_norm_dim(k, x.dim()) for k in dims if x.shape[_norm_dim(k, x.dim())] == 1}
    else:
        drop = {k for k, s in enumerate(x.shape) if s == 1}
    ctx.out(ctx.outputs[0], [a for k, a in enumerate(d) if k not in drop])


@register_rule("expand", "expand_copy")
def expand(ctx: OpContext) -> None:
    x = ctx.args[0]
    o = ctx.outputs[0]
    d = ctx.dims(x)
    lead = o.dim() - x.dim()
    ctx.kind = "reshape"
    ctx.info["ints"] = [int(s) for s in ctx.args[1]]
    # every index of an expanded dim holds the same values, so any of them may go: the dim is
    # free (a padding mask expanded to the head count follows the heads). The size written in
    # the code follows an int attribute that holds it (``_reshape_constants``); a literal is
    # caught by the check forward, which keeps those channels.
    res = [ctx.new(s) for s in o.shape[:lead]]
    for k, a in enumerate(d):
        res.append(a if x.shape[k] == o.shape[lead + k] else ctx.new(o.shape[lead + k]))
    ctx.out(o, res)


@register_rule("repeat")
def repeat(ctx: OpContext) -> None:
    x = ctx.args[0]
    reps = list(ctx.args[1])
    o = ctx.outputs[0]
    ctx.kind = "reshape"
    ctx.info["ints"] = [int(r) for r in reps]
    lead = len(reps) - x.dim()
    res = [ctx.new(s, "repeated") for s in o.shape[:lead]]
    for k, a in enumerate(ctx.dims(x)):
        r = reps[lead + k]
        if r == 1:
            res.append(a)
        else:
            tiled = ctx.new(o.shape[lead + k])
            ctx.refine(tiled, PROD, [ctx.new(r, "repeat count"), a])
            res.append(tiled)
    ctx.out(o, res)


# --- slicing and joining ---------------------------------------------------------------------
_MAX_EQUAL_PARTS = 8  # halves, q/k/v thirds, LSTM gate quarters; not one token of many


@register_rule("slice", "slice_copy")
def slice_(ctx: OpContext) -> None:
    x = ctx.args[0]
    n = x.dim()
    dim = _norm_dim(ctx.arg("dim", 0), n)
    size = x.shape[dim]
    start, end, step = ctx.arg("start", 0), ctx.arg("end", size), ctx.arg("step", 1)
    start = max(0, min(size, start + size if start < 0 else start))
    end = max(start, min(size, end + size if end < 0 else end))
    d = list(ctx.dims(x))
    if start == 0 and end == size and step == 1:
        ctx.out(ctx.outputs[0], d)
        return
    if step != 1:
        ctx.lock([d[dim]], "strided slice")
        d[dim] = ctx.new(ctx.outputs[0].shape[dim], "strided slice")
        ctx.out(ctx.outputs[0], d)
        return
    try:
        d[dim] = _slice_dim(ctx, d[dim], size, start, end)
    except AlgebraConflict as exc:
        _lock_conflicting_dim(ctx, d, dim, ctx.outputs[0].shape[dim], exc)
    ctx.out(ctx.outputs[0], d)


def _slice_dim(ctx: OpContext, a: int, size: int, start: int, end: int) -> int:
    """The atom of ``x[start:end]`` along a dim whose atom is ``a``."""
    part = end - start
    if part and size % part == 0 and start % part == 0 and size // part <= _MAX_EQUAL_PARTS:
        # x[..., :n//2], qkv[n//3 : 2*n//3]: one of k equal parts, the cut recomputed from the
        # size at run time, so every part must keep the same count; the same indices is the
        # exact way to do it (a cut fixed in code shows in the check forward)
        parts = [ctx.new(part) for _ in range(size // part)]
        ctx.refine(a, CAT, parts)
        for p in parts[1:]:
            ctx.unify(parts[0], p)
        return parts[start // part]
    mid = ctx.new(part)
    ctx.refine(a, CAT, [ctx.new(start), mid, ctx.new(size - end)])
    ctx.lock([a], "slice at a fixed position")
    return mid


def _lock_conflicting_dim(
    ctx: OpContext, d: list[int], dim: int, size: int, exc: AlgebraConflict
) -> None:
    """A cut that contradicts an earlier split of the same dim (Swin crops its padded windows
    along a dim the windows split as 6 x 7): keep that dim whole, the op's other dims (the
    channels) stay free; ``d[dim]`` becomes the output's own, locked, atom."""
    ctx.lock([d[dim]], f"AlgebraConflict: {exc}")
    d[dim] = ctx.new(size, f"cut from a locked dim by {ctx.name}")


@register_rule("select", "select_copy")
def select(ctx: OpContext) -> None:
    x = ctx.args[0]
    dim = _norm_dim(ctx.args[1], x.dim())
    size = x.shape[dim]
    idx = ctx.args[2] + size if ctx.args[2] < 0 else ctx.args[2]
    d = list(ctx.dims(x))
    try:
        ctx.refine(d[dim], CAT, [ctx.new(idx), ctx.new(1), ctx.new(size - idx - 1)])
        ctx.lock([d[dim]], "select at a fixed index")
    except AlgebraConflict as exc:
        _lock_conflicting_dim(ctx, d, dim, 1, exc)
    ctx.out(ctx.outputs[0], d[:dim] + d[dim + 1 :])


@register_rule(
    "split", "split_with_sizes", "unbind", "split_copy", "unbind_copy", "unsafe_split",
    "unsafe_split_with_sizes",
)  # fmt: skip
def split(ctx: OpContext) -> None:
    x = ctx.args[0]
    dim = _norm_dim(ctx.arg("dim", 0), x.dim())
    d = ctx.dims(x)
    keep_dim = ctx.name != "unbind"
    parts = [ctx.new(o.shape[dim] if keep_dim else 1) for o in ctx.outputs]
    ctx.refine(d[dim], CAT, parts)
    if keep_dim:  # the sizes the code asked for: attributes holding them must follow (attrs.py)
        size = ctx.pos(1)
        asked = [size] * len(parts) if isinstance(size, int) else list(size or [])
        ctx.info["split"] = [(int(s), p) for s, p in zip(asked, parts, strict=False)]
    # chunk/split recompute the cut from the size at run time: equal parts stay equal. A part
    # that is a whole number of the smallest part (nn.MultiheadAttention's cross-attention
    # splits its packed projection into [E, 2E]) is that many blocks of it, each keeping the
    # smallest part's indices, so the proportions hold after pruning; other parts are kept.
    sizes = [ctx.g.atoms.size(p) for p in parts]
    unit = min((k for k, sz in enumerate(sizes) if sz > 0), key=sizes.__getitem__, default=None)
    for p, sz in zip(parts, sizes, strict=True):
        if unit is None or p == parts[unit] or sz == 0:
            continue
        if sz == sizes[unit]:
            ctx.unify(parts[unit], p)
        elif sz % sizes[unit] == 0:
            block = ctx.new(sizes[unit])
            ctx.refine(p, PROD, [ctx.new(sz // sizes[unit], "copies of a split part"), block])
            ctx.unify(parts[unit], block)
        else:
            ctx.lock([p], "uneven split")
    for o, p in zip(ctx.outputs, parts, strict=True):
        ctx.out(o, d[:dim] + [p] + d[dim + 1 :] if keep_dim else d[:dim] + d[dim + 1 :])


@register_rule("cat", "concat", "concatenate")
def cat(ctx: OpContext) -> None:
    o = ctx.outputs[0]
    dim = _norm_dim(ctx.arg("dim", 0), o.dim())
    parts, rest = [], None
    for t in ctx.arg("tensors"):
        if t.dim() != o.dim():  # legacy empty 1-D operand
            continue
        d = ctx.dims(t)
        parts.append(d[dim])
        if rest is None:
            rest = list(d)
        else:
            for k in range(o.dim()):
                if k != dim:
                    ctx.unify(rest[k], d[k])
    joined = ctx.new(o.shape[dim])
    ctx.refine(joined, CAT, parts)
    res = list(rest)
    res[dim] = joined
    ctx.out(o, res)


@register_rule("stack")
def stack(ctx: OpContext) -> None:
    o = ctx.outputs[0]
    dim = _norm_dim(ctx.arg("dim", 0), o.dim())
    ts = ctx.arg("tensors")
    d0 = ctx.dims(ts[0])
    for t in ts[1:]:
        for a, b in zip(d0, ctx.dims(t), strict=True):
            ctx.unify(a, b)
    res = list(d0)
    res.insert(dim, ctx.new(len(ts), "stacked"))
    ctx.out(o, res)


@register_rule("constant_pad_nd")
def constant_pad(ctx: OpContext) -> None:
    x, pad = ctx.args[0], list(ctx.args[1])
    d = list(ctx.dims(x))
    for k in range(len(pad) // 2):
        dim = x.dim() - 1 - k
        lo, hi = pad[2 * k], pad[2 * k + 1]
        if lo == 0 and hi == 0:
            continue
        if lo < 0 or hi < 0:
            ctx.lock([d[dim]], "negative padding")
            d[dim] = ctx.new(ctx.outputs[0].shape[dim], "cropped")
            continue
        padded = ctx.new(x.shape[dim] + lo + hi)
        ctx.refine(padded, CAT, [ctx.new(lo, "padding"), d[dim], ctx.new(hi, "padding")])
        d[dim] = padded
    ctx.out(ctx.outputs[0], d)


@register_rule("roll", "flip", "tril", "triu")
def positional(ctx: OpContext) -> None:
    """Ops that move or mask positions along some dims: those dims must stay whole."""
    x = ctx.args[0]
    d = ctx.dims(x)
    if ctx.name == "roll":
        dims = ctx.arg("dims", []) or list(range(x.dim()))
    elif ctx.name == "flip":
        dims = ctx.arg("dims")
    else:
        dims = [-2, -1]
    ctx.lock([d[_norm_dim(k, x.dim())] for k in dims], f"positions moved by aten.{ctx.name}")
    ctx.out(ctx.outputs[0], list(d))


@register_rule("index", "_unsafe_index")
def index(ctx: OpContext) -> None:
    x = ctx.args[0]
    idx = list(ctx.args[1])
    d = ctx.dims(x)
    o = ctx.outputs[0]
    used = [k for k, t in enumerate(idx) if t is not None]
    ctx.lock([d[k] for k in used], "indexed by a tensor")
    ishape = torch.broadcast_shapes(*[idx[k].shape for k in used])
    idims = broadcast(ctx, [idx[k] for k in used], tuple(ishape))
    if used == list(range(used[0], used[-1] + 1)):
        res = list(d[: used[0]]) + idims + list(d[used[-1] + 1 :])
    else:
        res = idims + [d[k] for k in range(len(d)) if k not in used]
    ctx.out(o, res)


@register_rule("index_put_", "index_put", "_index_put_impl_")
def index_put(ctx: OpContext) -> None:
    """``x[idx] = values`` with the indices on x's leading dims (wav2vec2 writes a learned
    embedding into masked time steps): those dims are addressed by index and kept; the values
    fill whole rows, so their trailing dims are x's remaining dims."""
    x, values = ctx.args[0], ctx.args[2]
    idx = list(ctx.args[1])
    d = ctx.dims(x)
    if not idx or any(t is None for t in idx):
        return unknown(ctx)
    covered = sum(t.dim() if t.dtype == torch.bool else 1 for t in idx)
    ctx.lock(list(d[:covered]), "indexed by a tensor")
    rest, dv = d[covered:], ctx.dims(values)
    for a, b, sa, sb in zip(
        reversed(rest), reversed(dv), reversed(x.shape), reversed(values.shape), strict=False
    ):
        if sa == sb and sb != 1:
            ctx.unify(a, b)
    for o in ctx.outputs:
        ctx.out(o, list(d))


@register_rule("index_select", "gather", "take_along_dim")
def index_select(ctx: OpContext) -> None:
    x = ctx.args[0]
    dim = _norm_dim(ctx.args[1], x.dim()) if x.dim() else 0
    d = list(ctx.dims(x))
    o = ctx.outputs[0]
    ctx.lock([d[dim]], f"indexed by aten.{ctx.name}")
    if ctx.name == "index_select":
        d[dim] = ctx.new(o.shape[dim], "selected")
        ctx.out(o, d)
    else:
        ctx.lock(list(d), f"aten.{ctx.name}")
        ctx.out_like(o, f"output of aten.{ctx.name}")


# --- contractions ------------------------------------------------------------------------------
@register_rule("mm")
def mm(ctx: OpContext) -> None:
    a, b = ctx.args[0], ctx.args[1]
    da, db = ctx.dims(a), ctx.dims(b)
    ctx.unify(da[1], db[0])
    ctx.kind = "matmul"
    ctx.info["macs"] = [[da[0], da[1], db[1]]]
    ctx.out(ctx.outputs[0], [da[0], db[1]])


@register_rule("addmm")
def addmm(ctx: OpContext) -> None:
    bias, a, b = ctx.args[0], ctx.args[1], ctx.args[2]
    da, db = ctx.dims(a), ctx.dims(b)
    ctx.unify(da[1], db[0])
    res = [da[0], db[1]]
    follow_broadcast(ctx, bias, res, tuple(ctx.outputs[0].shape))
    ctx.kind = "matmul"
    ctx.info["macs"] = [[da[0], da[1], db[1]]]
    ctx.out(ctx.outputs[0], res)


@register_rule("bmm", "baddbmm")
def bmm(ctx: OpContext) -> None:
    if ctx.name == "baddbmm":
        bias, a, b = ctx.args[0], ctx.args[1], ctx.args[2]
    else:
        bias, a, b = None, ctx.args[0], ctx.args[1]
    da, db = ctx.dims(a), ctx.dims(b)
    ctx.unify(da[0], db[0])
    ctx.unify(da[2], db[1])
    res = [da[0], da[1], db[2]]
    if bias is not None:
        follow_broadcast(ctx, bias, res, tuple(ctx.outputs[0].shape))
    ctx.kind = "matmul"
    ctx.info["macs"] = [[da[0], da[1], da[2], db[2]]]
    ctx.out(ctx.outputs[0], res)


@register_rule("_grouped_mm")
def grouped_mm(ctx: OpContext) -> None:
    """One matmul per group (a mixture of experts: tokens sorted by expert, ``offs`` ending
    each expert's rows, weights stacked ``(experts, in, out)``). The experts share each width,
    so a pruned index leaves every expert; the expert count stays."""
    a, b = ctx.args[0], ctx.args[1]
    da, db = ctx.dims(a), ctx.dims(b)
    o = ctx.outputs[0]
    if a.dim() == 2 and b.dim() == 3:  # rows of a split among b's groups by offs
        ctx.lock([db[0]], "experts are chosen by offsets", report=False)
        ctx.unify(da[1], db[1])
        res, macs = [da[0], db[2]], [da[0], da[1], db[2]]
    elif a.dim() == 3 and b.dim() == 3:  # a batch of groups
        ctx.unify(da[0], db[0])
        ctx.unify(da[2], db[1])
        res, macs = [da[0], da[1], db[2]], [da[0], da[1], da[2], db[2]]
    else:
        return unknown(ctx)
    bias = ctx.arg("bias")
    if isinstance(bias, torch.Tensor):
        ctx.unify(ctx.dims(bias)[-1], res[-1])
    ctx.kind = "matmul"
    ctx.info["macs"] = [macs]
    ctx.out(o, res)


@register_rule("_cdist_forward", "_euclidean_dist")
def pairwise_distance(ctx: OpContext) -> None:
    """torch.cdist (a vector quantizer's codebook distances): rows of ``x1`` against rows of
    ``x2`` over their shared last dim. A pruned index is zero in both in the masked original,
    so it adds nothing to any p-norm distance."""
    a, b = ctx.args[0], ctx.args[1]
    da, db = ctx.dims(a), ctx.dims(b)
    if a.dim() != b.dim() or a.shape[:-2] != b.shape[:-2]:
        return unknown(ctx)
    ctx.unify(da[-1], db[-1])
    for x, y in zip(da[:-2], db[:-2], strict=True):
        ctx.unify(x, y)
    ctx.out(ctx.outputs[0], [*da[:-1], db[-2]])


@register_rule("mv")
def mv(ctx: OpContext) -> None:
    da, dv = ctx.dims(ctx.args[0]), ctx.dims(ctx.args[1])
    ctx.unify(da[1], dv[0])
    ctx.kind = "matmul"
    ctx.info["macs"] = [[da[0], da[1]]]
    ctx.out(ctx.outputs[0], [da[0]])


@register_rule("dot", "vdot")
def dot(ctx: OpContext) -> None:
    ctx.unify(ctx.dims(ctx.args[0])[0], ctx.dims(ctx.args[1])[0])


@register_rule("convolution", "_convolution")
def convolution(ctx: OpContext) -> None:
    x, w, b = ctx.args[0], ctx.args[1], ctx.args[2]
    transposed, groups = bool(ctx.args[6]), int(ctx.args[8])
    dx, dw = ctx.dims(x), ctx.dims(w)
    o = ctx.outputs[0]
    ctx.lock(dw[2:], "kernel geometry", report=False)
    unbatched = x.dim() == w.dim() - 1
    cx = 0 if unbatched else 1
    # the kernel slides over the input's positions: they are geometry, not channels (a map
    # unflattened from a Linear, as in a decoder, must keep them)
    ctx.lock(dx[cx + 1 :], "spatial", report=False)
    w_in, w_out = (0, 1) if transposed else (1, 0)
    cout = ctx.new(o.shape[cx])
    if groups == 1:
        ctx.unify(dx[cx], dw[w_in])
        ctx.unify(cout, dw[w_out] if not transposed else dw[1])
        gatom = None
    else:
        gatom = ctx.new(groups)
        per_in = dw[1] if not transposed else ctx.new(w.shape[0] // groups)
        ctx.refine(dx[cx], PROD, [gatom, per_in])
        if transposed:
            ctx.refine(dw[0], PROD, [gatom, per_in])
            ctx.refine(cout, PROD, [gatom, dw[1]])
        else:
            ctx.refine(dw[0], PROD, [gatom, ctx.new(w.shape[0] // groups)])
            ctx.unify(cout, dw[0])
    if b is not None:
        ctx.unify(ctx.dims(b)[0], cout)
    spatial = [ctx.new(s, "spatial") for s in o.shape[cx + 1 :]]
    res = ([] if unbatched else [dx[0]]) + [cout] + spatial
    ctx.kind = "conv"
    names = ctx.g.tensor_names.get(id(w))  # a name survives a meta trace, an id does not
    ctx.info.update(weight=names[0] if names else None, groups=gatom)
    ctx.info["macs"] = [res + dw[1:] if not transposed else dx + dw[1:]]
    ctx.out(o, res)


# --- normalisation -----------------------------------------------------------------------------
@register_rule(
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "cudnn_batch_norm", "miopen_batch_norm",
)  # fmt: skip
def batch_norm(ctx: OpContext) -> None:
    x = ctx.args[0]
    d = ctx.dims(x)
    c = d[1] if x.dim() > 1 else d[0]
    flags = [a for a in ctx.args[3:6] if isinstance(a, bool)]
    if "no_training" not in ctx.name and flags and flags[0] and x.dim() > 1:
        # batch statistics reduce over every dim but 1: removing indices there changes the
        # mean/var (timm's ScaledStdConv2d standardises weights this way, over fan-in)
        ctx.lock([a for i, a in enumerate(d) if i != 1], "batch-norm statistics over this dim")
    for t in ctx.args[1:5]:
        if isinstance(t, torch.Tensor) and t.dim() == 1 and t.shape[0] == x.shape[1]:
            ctx.unify(ctx.dims(t)[0], c)
    outs = ctx.outputs
    ctx.out(outs[0], list(d))
    for t in outs[1:]:
        if t.dim() == 1 and t.shape[0] == x.shape[1]:
            ctx.out(t, [c])


@register_rule("native_layer_norm")
def layer_norm(ctx: OpContext) -> None:
    x, shape, w, b = ctx.args[0], list(ctx.args[1]), ctx.args[2], ctx.args[3]
    d = ctx.dims(x)
    k = len(shape)
    normed = d[x.dim() - k :]
    for t in (w, b):
        if isinstance(t, torch.Tensor):
            for a, c in zip(ctx.dims(t), normed, strict=True):
                ctx.unify(a, c)
    for a in normed:
        ctx.g.atoms.mark_stat(a)
    ctx.kind = "stat"
    ctx.info.update(stat="layer_norm", dims=list(range(x.dim() - k, x.dim())))
    outs = ctx.outputs
    ctx.out(outs[0], list(d))
    for t in outs[1:]:
        ctx.out(t, list(d[: x.dim() - k]) + [ctx.new(1) for _ in range(t.dim() - x.dim() + k)])


@register_rule("native_group_norm")
def group_norm(ctx: OpContext) -> None:
    x, w, b = ctx.args[0], ctx.args[1], ctx.args[2]
    groups = int(ctx.args[6])
    d = ctx.dims(x)
    c = d[1]
    gatom, per = ctx.new(groups), ctx.new(x.shape[1] // groups)
    ctx.refine(c, PROD, [gatom, per])
    for t in (w, b):
        if isinstance(t, torch.Tensor):
            ctx.unify(ctx.dims(t)[0], c)
    ctx.g.atoms.mark_stat(per)
    ctx.kind = "stat"
    ctx.info.update(stat="group_norm", groups=gatom, dims=[1])
    outs = ctx.outputs
    ctx.out(outs[0], list(d))
    for t in outs[1:]:
        ctx.out(t, [d[0], gatom])


@register_rule("mean", "sum", "nansum", "var", "std", "var_mean", "std_mean")
def stat_reduction(ctx: OpContext) -> None:
    """Width statistics over free channels stay exact when computed over kept channels only
    (the masked reference does the same), so they refine nothing. A sum over kept channels is
    the sum with the pruned ones zeroed: one of them too (ResNeSt's and SKNet's sum over
    splits)."""
    x = ctx.args[0]
    d = ctx.dims(x)
    dims = ctx.arg("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(x.dim()))
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = sorted({_norm_dim(k, x.dim()) for k in dims})
    keep = bool(ctx.arg("keepdim", False))
    for k in dims:
        ctx.g.atoms.mark_stat(d[k])
    ctx.kind = "stat"
    ctx.info.update(stat=ctx.name, dims=dims, correction=_correction(ctx))
    res = [ctx.new(1) if k in dims else a for k, a in enumerate(d) if keep or k not in dims]
    for o in ctx.outputs:
        ctx.out(o, list(res))


def _correction(ctx: OpContext) -> float:
    if ctx.name not in ("var", "std", "var_mean", "std_mean"):
        return 0.0
    c = ctx.bound.get("correction")
    if c is not None:
        return float(c)
    unbiased = ctx.bound.get("unbiased")
    return 0.0 if unbiased is False else 1.0


@register_rule("linalg_vector_norm", "norm")
def vector_norm(ctx: OpContext) -> None:
    """A p-norm over chosen dims (F.normalize: cosine attention, QK-norm) is a width
    statistic for p > 0: the norm of the kept entries is the norm with the pruned ones zeroed,
    which the masked reference computes. Over all dims, or p <= 0, it stays a boundary."""
    x = ctx.args[0]
    dims = ctx.arg("dim")
    p = ctx.arg("ord", ctx.arg("p", 2))
    if isinstance(dims, int):
        dims = [dims]
    if not dims or isinstance(p, torch.Tensor) or not float(p) > 0 or not x.dim():
        return positional_reduction(ctx)
    d = ctx.dims(x)
    dims = sorted({_norm_dim(k, x.dim()) for k in dims})
    keep = bool(ctx.arg("keepdim", False))
    for k in dims:
        ctx.g.atoms.mark_stat(d[k])
    ctx.kind = "stat"
    ctx.info.update(stat="vector_norm", dims=dims, ord=float(p), keepdim=keep)
    res = [ctx.new(1) if k in dims else a for k, a in enumerate(d) if keep or k not in dims]
    ctx.out(ctx.outputs[0], res)


@register_rule(
    "amax", "amin", "max", "min", "argmax", "argmin", "logsumexp", "prod", "any", "all",
    "cumsum", "cumprod", "_softmax", "_log_softmax", "softmax", "log_softmax", "sort", "topk",
    "kthvalue", "median", "mode", "_safe_softmax",
)  # fmt: skip
def positional_reduction(ctx: OpContext) -> None:
    """Reductions whose value depends on every position (and softmax over a dim)."""
    x = ctx.args[0]
    d = ctx.dims(x)
    norm = ctx.name in ("linalg_vector_norm", "norm")  # (self, ord/p, dim, keepdim)
    over_all = ctx.arg("dim") in (None, [], ()) if norm else len(ctx.args) == 1
    if over_all and (norm or ctx.name in ("max", "min", "amax", "amin", "any", "all", "prod")):
        ctx.lock(list(d), f"aten.{ctx.name} over all dims")
        for o in ctx.outputs:
            ctx.out_like(o, "reduced")
        return
    # by name: topk and kthvalue take ``k`` before ``dim``
    dims = ctx.arg("dim") if norm else ctx.bound.get("dim", ctx.bound.get("dims"))
    if dims is None or isinstance(dims, torch.Tensor):
        return unknown(ctx)
    dims = [dims] if isinstance(dims, int) else list(dims) or list(range(x.dim()))
    dims = sorted({_norm_dim(k, x.dim()) for k in dims})
    ctx.lock([d[k] for k in dims], f"aten.{ctx.name} mixes positions")
    for o in ctx.outputs:
        if o.dim() == x.dim():
            same = [a if o.shape[k] == x.shape[k] else ctx.new(o.shape[k]) for k, a in enumerate(d)]
            ctx.out(o, same)
        elif o.dim() == x.dim() - len(dims):
            ctx.out(o, [a for k, a in enumerate(d) if k not in dims])


@register_rule("embedding")
def embedding(ctx: OpContext) -> None:
    w, idx = ctx.args[0], ctx.args[1]
    dw = ctx.dims(w)
    ctx.lock([dw[0]], "embedding rows are looked up by index", report=False)
    ctx.out(ctx.outputs[0], list(ctx.dims(idx)) + [dw[1]])


@register_rule("_embedding_bag_forward_only", "_embedding_bag")
def embedding_bag(ctx: OpContext) -> None:
    """nn.EmbeddingBag: rows looked up by index and pooled per bag; the embedding dim passes
    through to the bags."""
    w = ctx.args[0]
    dw = ctx.dims(w)
    ctx.lock([dw[0]], "embedding rows are looked up by index", report=False)
    bags, *rest = ctx.outputs
    pooled = [ctx.new(bags.shape[0], "bags"), dw[1]]
    ctx.out(bags, pooled)
    for t in rest:  # offset2bag and bag_size; max_indices (mode="max") is shaped like the bags
        if t.shape == bags.shape:
            ctx.out(t, pooled)
        else:
            ctx.out_like(t, "embedding bag bookkeeping")


@register_rule("_weight_norm_interface")
def weight_norm(ctx: OpContext) -> None:
    """``w = v * g / ||v||`` (nn.utils.parametrizations.weight_norm): ``w`` keeps ``v``'s dims
    and ``g`` shares the dim the norm keeps. The norm runs over the other dims; the masked
    original zeroes ``v`` there, so its norm equals the pruned one's."""
    v, g = ctx.args[0], ctx.args[1]
    if g.dim() != v.dim():
        return unknown(ctx)
    dv = ctx.dims(v)
    w, norms = ctx.outputs[0], ctx.outputs[1]
    ctx.out(w, list(dv))
    kept = []
    for k, a in enumerate(ctx.dims(g)):
        if g.shape[k] == v.shape[k] and g.shape[k] > 1:
            ctx.unify(a, dv[k])
        kept.append(dv[k] if g.shape[k] == v.shape[k] else ctx.new(g.shape[k]))
    ctx.out(norms, kept)


@register_rule("glu")
def glu(ctx: OpContext) -> None:
    """``a * sigmoid(b)`` for the two halves of ``dim``: the halves are cut at run time, so
    they keep the same indices, and the output is one half."""
    x = ctx.args[0]
    dim = _norm_dim(ctx.arg("dim", -1), x.dim())
    d = list(ctx.dims(x))
    a, b = ctx.new(x.shape[dim] // 2), ctx.new(x.shape[dim] // 2)
    ctx.refine(d[dim], CAT, [a, b])
    ctx.unify(a, b)
    d[dim] = a
    ctx.out(ctx.outputs[0], d)


@register_rule("im2col", "col2im")
def im2col(ctx: OpContext) -> None:
    """F.unfold / F.fold: each channel becomes ``kh * kw`` rows (channel-major) of the column
    matrix, or back; the positions are new geometry."""
    x, o = ctx.args[0], ctx.outputs[0]
    d = ctx.dims(x)
    kernel = ctx.arg("kernel_size")
    taps = int(kernel[0]) * int(kernel[1])
    folding = ctx.name == "col2im"
    cols, image = (x, o) if folding else (o, x)
    lead = cols.dim() - 2  # 1 with a batch dim, 0 without
    channel = ctx.new(image.shape[lead])
    rows = ctx.new(cols.shape[lead])
    ctx.refine(rows, PROD, [channel, ctx.new(taps, "kernel taps")])
    if folding:
        ctx.unify(rows, d[lead])
        ctx.lock(d[lead + 1 :], "spatial", report=False)
        out = [*d[:lead], channel] + [ctx.new(n, "spatial") for n in o.shape[lead + 1 :]]
    else:
        ctx.unify(channel, d[lead])
        ctx.lock(d[lead + 1 :], "spatial", report=False)
        out = [*d[:lead], rows, ctx.new(o.shape[-1], "spatial")]
    ctx.out(o, out)


@register_rule("unfold")
def sliding_windows(ctx: OpContext) -> None:
    """``Tensor.unfold(dim, size, step)``: windows along ``dim`` (now ``n_windows``) with their
    taps as a new last dim; every other dim passes through. ``size`` and ``step`` are constants
    in the code, so the taps are locked. Windows that tile ``dim`` exactly (``step == size``)
    are a reshape of it, so whole windows can go; overlapping or partial windows mix
    positions, so ``dim`` is locked."""
    x, o = ctx.args[0], ctx.outputs[0]
    d = list(ctx.dims(x))
    size, step = int(ctx.arg("size")), int(ctx.arg("step"))
    taps = ctx.new(size, "the window size is a constant in the code")
    if x.dim():
        dim = _norm_dim(ctx.arg("dimension", 0), x.dim())
        if step == size and o.shape[dim] * size == x.shape[dim]:
            windows = ctx.new(o.shape[dim])
            ctx.refine(d[dim], PROD, [windows, taps])
        else:
            ctx.lock([d[dim]], "overlapping windows mix positions", report=False)
            windows = ctx.new(o.shape[dim], "overlapping windows")
        d[dim] = windows
    ctx.out(o, d + [taps])


@register_rule("grid_sampler_2d", "grid_sampler_3d", "grid_sampler")
def grid_sampler(ctx: OpContext) -> None:
    """Each channel is sampled at the grid's points (a spatial transformer): channels pass
    through, the positions come from the grid."""
    x, grid, o = ctx.args[0], ctx.args[1], ctx.outputs[0]
    d, dg = ctx.dims(x), ctx.dims(grid)
    ctx.lock(d[2:], "spatial", report=False)
    ctx.out(o, [d[0], d[1]] + [ctx.new(s, "spatial") for s in o.shape[2:]])
    ctx.unify(d[0], dg[0])


@register_rule("affine_grid_generator")
def affine_grid(ctx: OpContext) -> None:
    """Sampling points from a batch of affine maps: geometry only (the size argument's
    channel count is not used)."""
    theta, o = ctx.args[0], ctx.outputs[0]
    ctx.lock(ctx.dims(theta)[1:], "the entries of an affine map")
    ctx.out(o, [ctx.dims(theta)[0]] + [ctx.new(s, "spatial") for s in o.shape[1:]])


@register_rule("_trilinear")
def trilinear(ctx: OpContext) -> None:
    """``sum over sumdim of i1 * i2 * i3``, each input first given size-1 dims at its
    ``expand`` positions (what F.bilinear calls): the inputs' dims at a common position are
    one index space, and the output keeps the positions not summed."""
    inputs = ctx.args[:3]
    expands, sumdim = ctx.args[3:6], set(ctx.args[6])
    rank = inputs[0].dim() + len(expands[0])
    at: list[int | None] = [None] * rank
    for t, expand in zip(inputs, expands, strict=True):
        own = iter(ctx.dims(t))
        for p in range(rank):
            if p in expand:
                continue
            a = next(own)
            if at[p] is None:
                at[p] = a
            else:
                ctx.unify(at[p], a)
    o = ctx.outputs[0]
    kept = [a for p, a in enumerate(at) if p not in sumdim]
    if len(kept) != o.dim() or any(a is None for a in kept):
        return unknown(ctx)
    ctx.out(o, kept)


@register_rule("_prelu_kernel", "prelu")
def prelu(ctx: OpContext) -> None:
    elementwise(ctx)


# --- spatial ops: channels pass through, geometry is new -------------------------------------
def _spatial(k: int) -> Rule:
    def rule(ctx: OpContext) -> None:
        x = ctx.args[0]
        d = ctx.dims(x)
        ctx.lock(d[x.dim() - k :], "spatial", report=False)
        for o in ctx.outputs:
            if o.dim() != x.dim():
                ctx.out_like(o, "spatial")
                continue
            lead = list(d[: x.dim() - k])
            ctx.out(o, lead + [ctx.new(s, "spatial") for s in o.shape[x.dim() - k :]])

    return rule


for _k, _names in {
    1: ("max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
        "upsample_nearest1d", "upsample_linear1d", "_upsample_nearest_exact1d",
        "reflection_pad1d", "replication_pad1d", "max_pool1d_with_indices"),
    2: ("max_pool2d_with_indices", "avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d",
        "max_pool2d", "upsample_nearest2d", "upsample_bilinear2d", "upsample_bicubic2d",
        "_upsample_nearest_exact2d", "_upsample_bilinear2d_aa", "reflection_pad2d",
        "replication_pad2d", "mkldnn_max_pool2d", "fractional_max_pool2d", "lp_pool2d"),
    3: ("max_pool3d_with_indices", "avg_pool3d", "_adaptive_avg_pool3d", "adaptive_max_pool3d",
        "upsample_nearest3d", "upsample_trilinear3d", "_upsample_nearest_exact3d",
        "reflection_pad3d", "replication_pad3d"),
}.items():  # fmt: skip
    register_rule(*_names)(_spatial(_k))


@register_rule("pixel_shuffle", "pixel_unshuffle")
def pixel_shuffle(ctx: OpContext) -> None:
    x, r = ctx.args[0], int(ctx.args[1])
    d = ctx.dims(x)
    o = ctx.outputs[0]
    c = x.dim() - 3
    spatial = [ctx.new(s, "spatial") for s in o.shape[-2:]]
    ctx.lock(d[-2:], "spatial", report=False)
    if ctx.name == "pixel_shuffle":
        co = ctx.new(o.shape[c])
        ctx.refine(d[c], PROD, [co, ctx.new(r, "pixel shuffle"), ctx.new(r, "pixel shuffle")])
    else:
        co = ctx.new(o.shape[c])
        ctx.refine(co, PROD, [d[c], ctx.new(r, "pixel shuffle"), ctx.new(r, "pixel shuffle")])
    ctx.out(o, list(d[:c]) + [co] + spatial)


@register_rule("channel_shuffle", "native_channel_shuffle")
def channel_shuffle(ctx: OpContext) -> None:
    x, g = ctx.args[0], int(ctx.args[1])
    d = list(ctx.dims(x))
    ga, na = ctx.new(g), ctx.new(x.shape[1] // g)
    ctx.refine(d[1], PROD, [ga, na])
    shuffled = ctx.new(x.shape[1])
    ctx.refine(shuffled, PROD, [na, ga])
    d[1] = shuffled
    ctx.out(ctx.outputs[0], d)


# --- attention ---------------------------------------------------------------------------------
@register_rule(
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_attention_math", "scaled_dot_product_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)  # fmt: skip
def sdpa(ctx: OpContext) -> None:
    q, k, v = ctx.args[0], ctx.args[1], ctx.args[2]
    dq, dk, dv = ctx.dims(q), ctx.dims(k), ctx.dims(v)
    n = q.dim()
    for i in range(n - 3):
        ctx.unify(dq[i], dk[i])
        ctx.unify(dk[i], dv[i])
    hq, hk = dq[n - 3], dk[n - 3]
    ctx.unify(hk, dv[n - 3])
    if q.shape[n - 3] != k.shape[n - 3]:
        rep = ctx.new(q.shape[n - 3] // k.shape[n - 3], "query heads per key/value head")
        ctx.refine(hq, PROD, [hk, rep])
    else:
        ctx.unify(hq, hk)
    ctx.unify(dq[-1], dk[-1])
    ctx.unify(dk[-2], dv[-2])
    mask = ctx.bound.get("attn_mask", ctx.bound.get("attn_bias"))
    if isinstance(mask, torch.Tensor) and mask.dim():  # a per-head bias goes with its heads
        scores = tuple(q.shape[:-1]) + (k.shape[-2],)
        follow_broadcast(ctx, mask, list(dq[:-1]) + [dk[-2]], scores)
    scale = ctx.bound.get("scale")
    reason = scale_follows_head_dim(scale, q.shape[-1])
    if reason is not None and scale is not None and _stored_constant(ctx, float(scale)):
        ctx.info.setdefault("fixed_scales", []).append((dq[-1], float(scale)))
    elif reason is not None:
        ctx.lock([dq[-1]], reason)
    ctx.kind = "sdpa"
    ctx.info.update(q_heads=hq, kv_heads=hk, head_dim=dq[-1], v_head_dim=dv[-1])
    ctx.info["macs"] = [list(dq) + [dk[-2]], list(dq[:-1]) + [dk[-2], dv[-1]]]
    outs = ctx.outputs
    ctx.out(outs[0], list(dq[:-1]) + [dv[-1]])
    for t in outs[1:]:
        if tuple(t.shape) == tuple(q.shape[:-1]):
            ctx.out(t, list(dq[:-1]))


# --- module-level constraints ---------------------------------------------------------------
ModuleRule = Callable[[Graph, str, torch.nn.Module], None]
_MODULE_RULES: dict[type, ModuleRule] = {}


def register_module_rule(*types: type) -> Callable[[ModuleRule], ModuleRule]:
    """Extension point: extra constraints a module's own code imposes (run after the trace)."""

    def wrap(fn: ModuleRule) -> ModuleRule:
        for t in types:
            _MODULE_RULES[t] = fn
        return fn

    return wrap


def apply_module_rules(graph: Graph) -> None:
    for where, mod in graph.model.named_modules():
        rule = next((_MODULE_RULES[c] for c in type(mod).__mro__ if c in _MODULE_RULES), None)
        if rule is None:
            continue
        try:
            rule(graph, where, mod)
        except (AlgebraConflict, KeyError, ValueError) as exc:
            atoms = [a for n, p in mod.named_parameters() for a in _layout_of(graph, p)]
            if graph.lock_all(atoms, f"{type(mod).__name__}: {exc}"):
                graph.boundaries.append(Boundary(type(mod).__name__, where, str(exc)))


def _layout_of(graph: Graph, t: torch.Tensor) -> list[int]:
    hit = graph.layouts.get(id(t))
    return hit[1] if hit is not None and hit[0] is t else []


@register_module_rule(torch.nn.MultiheadAttention)
def _mha(graph: Graph, where: str, mod: torch.nn.Module) -> None:
    """``F.multi_head_attention_forward`` derives head_dim from the *query's* width, so the
    query's, inner and output widths must shrink together: tie them to one index space. Keys
    and values of their own widths (``kdim``/``vdim``) only feed their projections."""
    out_w = _layout_of(graph, mod.out_proj.weight)
    if not out_w:
        return
    if mod._qkv_same_embed_dim:
        ins = [_layout_of(graph, mod.in_proj_weight)]
    else:
        ins = [_layout_of(graph, mod.q_proj_weight)]
    for lay in ins:
        if not lay:
            raise ValueError("projection weights not traced")
        graph.atoms.unify(lay[1], out_w[1])
    graph.atoms.unify(out_w[0], out_w[1])
