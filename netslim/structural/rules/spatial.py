"""Spatial ops: channels pass through, the geometry is new (pooling, resampling, folding)."""

from __future__ import annotations

from netslim.structural.atoms import PROD
from netslim.structural.rules.context import OpContext, Rule, norm_dim, register_rule


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
        dim = norm_dim(ctx.arg("dimension", 0), x.dim())
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
