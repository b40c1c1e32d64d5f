"""Embedding lookups: the table's rows are looked up by index and stay whole."""

from __future__ import annotations

from netslim.structural.rules.context import OpContext, register_rule


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
