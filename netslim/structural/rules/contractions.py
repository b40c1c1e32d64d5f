"""Contractions (matrix products, convolutions): the contracted dims of both operands are one."""

from __future__ import annotations

import torch

from netslim.structural.atoms import PROD
from netslim.structural.rules.context import OpContext, register_rule
from netslim.structural.rules.elementwise import follow_broadcast
from netslim.structural.rules.trivial import unknown


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
