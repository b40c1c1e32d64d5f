"""Views and reshapes: dims split into and merged from atoms, reordered, added, repeated."""

from __future__ import annotations

from netslim.structural.atoms import PROD, AlgebraConflict
from netslim.structural.rules.context import OpContext, norm_dim, register_rule
from netslim.structural.rules.trivial import unknown


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
    order = [norm_dim(k, x.dim()) for k in ctx.arg("dims")]
    ctx.out(ctx.outputs[0], [d[k] for k in order])


@register_rule("transpose", "swapaxes", "swapdims", "transpose_", "swapaxes_", "swapdims_")
def transpose(ctx: OpContext) -> None:
    x = ctx.args[0]
    d = list(ctx.dims(x))
    a, b = norm_dim(ctx.args[1], x.dim()), norm_dim(ctx.args[2], x.dim())
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
    d.insert(norm_dim(ctx.args[1], x.dim() + 1), ctx.new(1))
    ctx.out(ctx.outputs[0], d)


@register_rule("squeeze")
def squeeze(ctx: OpContext) -> None:
    x = ctx.args[0]
    d = ctx.dims(x)
    if len(ctx.args) > 1:
        dims = ctx.args[1]
        dims = [dims] if isinstance(dims, int) else list(dims)
        drop = {norm_dim(k, x.dim()) for k in dims if x.shape[norm_dim(k, x.dim())] == 1}
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
