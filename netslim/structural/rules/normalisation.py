"""Normalisations and reductions: the dims they compute statistics over are kept whole."""

from __future__ import annotations

import torch

from netslim.structural.atoms import PROD
from netslim.structural.rules.context import OpContext, norm_dim, register_rule
from netslim.structural.rules.trivial import unknown


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
    dims = sorted({norm_dim(k, x.dim()) for k in dims})
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
    dims = sorted({norm_dim(k, x.dim()) for k in dims})
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
    dims = sorted({norm_dim(k, x.dim()) for k in dims})
    ctx.lock([d[k] for k in dims], f"aten.{ctx.name} mixes positions")
    for o in ctx.outputs:
        if o.dim() == x.dim():
            same = [a if o.shape[k] == x.shape[k] else ctx.new(o.shape[k]) for k, a in enumerate(d)]
            ctx.out(o, same)
        elif o.dim() == x.dim() - len(dims):
            ctx.out(o, [a for k, a in enumerate(d) if k not in dims])


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
