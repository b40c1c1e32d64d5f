"""Boundaries, ops that pass their input's dims through, and ops that make new tensors."""

from __future__ import annotations

from netslim.structural.rules.context import OpContext, register_rule
from netslim.structural.rules.elementwise import elementwise


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
