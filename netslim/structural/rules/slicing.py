"""Slicing, joining and indexing: parts of a dim cut at fixed offsets, and positions looked up."""

from __future__ import annotations

import torch

from netslim.structural.atoms import CAT, PROD, AlgebraConflict
from netslim.structural.rules.context import OpContext, norm_dim, register_rule
from netslim.structural.rules.elementwise import broadcast
from netslim.structural.rules.trivial import unknown

_MAX_EQUAL_PARTS = 8  # halves, q/k/v thirds, LSTM gate quarters; not one token of many


@register_rule("slice", "slice_copy")
def slice_(ctx: OpContext) -> None:
    x = ctx.args[0]
    n = x.dim()
    dim = norm_dim(ctx.arg("dim", 0), n)
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
    dim = norm_dim(ctx.args[1], x.dim())
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
    dim = norm_dim(ctx.arg("dim", 0), x.dim())
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
    dim = norm_dim(ctx.arg("dim", 0), o.dim())
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
    dim = norm_dim(ctx.arg("dim", 0), o.dim())
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
    ctx.lock([d[norm_dim(k, x.dim())] for k in dims], f"positions moved by aten.{ctx.name}")
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
    dim = norm_dim(ctx.args[1], x.dim()) if x.dim() else 0
    d = list(ctx.dims(x))
    o = ctx.outputs[0]
    ctx.lock([d[dim]], f"indexed by aten.{ctx.name}")
    if ctx.name == "index_select":
        d[dim] = ctx.new(o.shape[dim], "selected")
        ctx.out(o, d)
    else:
        ctx.lock(list(d), f"aten.{ctx.name}")
        ctx.out_like(o, f"output of aten.{ctx.name}")
