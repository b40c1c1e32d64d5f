"""Scaled dot-product attention: heads, the head width and the sequence dims of q, k and v."""

from __future__ import annotations

import torch

from netslim.structural.atoms import PROD
from netslim.structural.graph import scale_follows_head_dim
from netslim.structural.rules.context import OpContext, register_rule
from netslim.structural.rules.elementwise import follow_broadcast, stored_constant


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
    if reason is not None and scale is not None and stored_constant(ctx, float(scale)):
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
