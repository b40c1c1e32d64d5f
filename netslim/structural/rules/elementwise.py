"""Elementwise ops: broadcast operands share their dims; a scale read off a pruned size is
checked."""

from __future__ import annotations

import math

import torch

from netslim.structural.atoms import CAT, AlgebraConflict
from netslim.structural.graph import hf_config
from netslim.structural.rules.context import OpContext, is_number, norm_dim, register_rule


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
        if t.dim() == 0 and t.numel() == 1 and (is_number(ctx.g, t) or ctx.g.is_state(t)):
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
                if v in python and stored_constant(ctx, v):
                    ctx.info.setdefault("fixed_scales", []).append((a, v))
                else:
                    ctx.lock([a], f"scale {v:g} looks derived from size {s}")


def stored_constant(ctx: OpContext, value: float) -> bool:
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


@register_rule("glu")
def glu(ctx: OpContext) -> None:
    """``a * sigmoid(b)`` for the two halves of ``dim``: the halves are cut at run time, so
    they keep the same indices, and the output is one half."""
    x = ctx.args[0]
    dim = norm_dim(ctx.arg("dim", -1), x.dim())
    d = list(ctx.dims(x))
    a, b = ctx.new(x.shape[dim] // 2), ctx.new(x.shape[dim] // 2)
    ctx.refine(d[dim], CAT, [a, b])
    ctx.unify(a, b)
    d[dim] = a
    ctx.out(ctx.outputs[0], d)


@register_rule("_prelu_kernel", "prelu")
def prelu(ctx: OpContext) -> None:
    elementwise(ctx)
