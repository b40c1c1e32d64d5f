"""Running the rule of each traced op, and recording it: an op without a rule is a boundary."""

from __future__ import annotations

from typing import Any

import torch

from netslim.structural.atoms import AlgebraConflict
from netslim.structural.graph import Graph, OpRecord, data_dependent
from netslim.structural.rules.context import RULES, OpContext, is_number
from netslim.structural.rules.elementwise import elementwise
from netslim.structural.rules.trivial import unknown


def apply_rule(graph: Graph, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """Run the rule for ``func``; on conflict or error lock everything the op touched."""
    ctx = OpContext(graph, func, args, kwargs, out)
    rule = RULES.get(ctx.name) or RULES.get(str(func.overloadpacket._qualified_op_name))
    if rule is None and (torch.Tag.pointwise in func.tags or _pointwise_inplace(ctx.name)):
        rule = elementwise
    if rule is None:
        rule = unknown
    from_numbers = all(is_number(graph, t) for t in ctx.tensor_args())
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
