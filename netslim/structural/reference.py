"""The oracle for equivalence tests: the *original* model with pruned channels masked to zero.

Zeroing every slice a removed index owns makes those channels carry exact zeros through the
network. Width statistics (LayerNorm/RMSNorm/GroupNorm means and variances over pruned
channels) are the one place where "zero" and "absent" differ; the oracle recomputes those ops
over kept channels only, matched by position in the op sequence of the trace.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from netslim.core.copying import copy_model
from netslim.core.unfused import unfused_kernels
from netslim.structural.forward import module_stack, run_model
from netslim.structural.graph import NOISE_OPS, aligned, flatten_tensors, op_key
from netslim.structural.groups import analyze
from netslim.structural.plan import PruningPlan


class _StatMask(TorchDispatchMode):
    """Replace op ``k`` by its masked version when ``k`` reduces over pruned channels."""

    def __init__(self, ops: dict[int, tuple[Any, list[torch.Tensor | None]]]) -> None:
        super().__init__()
        self.ops = ops
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if str(func.overloadpacket.__name__) in NOISE_OPS:
            return func(*args, **kwargs)
        k = self.count
        self.count += 1
        hit = self.ops.get(k)
        if hit is None:
            return func(*args, **kwargs)
        rec, masks = hit
        name = str(func.overloadpacket.__name__)
        if op_key(name) != op_key(rec.name):
            raise RuntimeError(f"op sequence diverged at {k}: {name} vs {rec.name}")
        native = func(*args, **kwargs)  # keeps the exact strides later ops depend on
        masked = _MASKED[rec.info["stat"]](rec, masks, args, kwargs, func)
        for o, v in zip(flatten_tensors(native), flatten_tensors(masked), strict=True):
            o.copy_(v)
        return native


def _dim_mask(x: torch.Tensor, masks: list[torch.Tensor | None], dims: list[int]) -> torch.Tensor:
    m = torch.ones((), dtype=torch.float64, device=x.device)
    for d in dims:
        md = masks[d]
        shape = [1] * x.dim()
        shape[d] = x.shape[d]
        part = torch.ones(x.shape[d], dtype=torch.float64) if md is None else md.double()
        m = m * part.to(x.device).view(shape)
    return m


def _mean_like(rec, masks, args, kwargs, func):  # noqa: ANN001
    x = args[0]
    dims = rec.info["dims"]
    keep = bool(
        kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
    )
    m = _dim_mask(x, masks, dims)
    xd = x.double()
    name = rec.name
    if name in ("sum", "nansum"):
        total = getattr(torch, name)(xd * m, dims, keepdim=keep)
        return total.to(func(*args, **kwargs).dtype)
    n = m.expand(x.shape).sum(dims, keepdim=True) if dims else m
    mean = (xd * m).sum(dims, keepdim=True) / n
    if name == "mean":
        res = mean if keep else mean.squeeze(dims)
        return res.to(func(*args, **kwargs).dtype)
    corr = rec.info.get("correction", 1.0)
    var = (((xd - mean) * m) ** 2).sum(dims, keepdim=True) / (n - corr)
    if not keep:
        var, mean = var.squeeze(dims), mean.squeeze(dims)
    ref = func(*args, **kwargs)
    if name == "var":
        return var.to(ref.dtype)
    if name == "std":
        return var.sqrt().to(ref.dtype)
    first = var if name == "var_mean" else var.sqrt()
    return first.to(ref[0].dtype), mean.to(ref[1].dtype)


def _layer_norm(rec, masks, args, kwargs, func):  # noqa: ANN001
    x, _shape, w, b, eps = args[:5]
    dims = rec.info["dims"]
    m = _dim_mask(x, masks, dims)
    xd = x.double()
    n = m.expand(x.shape).sum(dims, keepdim=True)
    mean = (xd * m).sum(dims, keepdim=True) / n
    var = (((xd - mean) * m) ** 2).sum(dims, keepdim=True) / n
    rstd = torch.rsqrt(var + eps)
    y = (xd - mean) * rstd
    if w is not None:
        y = y * w.double()
    if b is not None:
        y = y + b.double()
    return y.to(x.dtype), mean.to(x.dtype), rstd.to(x.dtype)


def _group_norm(rec, masks, args, kwargs, func):  # noqa: ANN001
    x, w, b, n_, c, hw, groups, eps = args[:8]
    mc = masks[1]
    mc = torch.ones(c, dtype=torch.float64) if mc is None else mc.double()
    xd = x.double().reshape(n_, groups, c // groups, -1)
    m = mc.to(x.device).view(1, groups, c // groups, 1)
    cnt = (m.sum(2, keepdim=True) * xd.shape[-1]).clamp(min=1)
    mean = (xd * m).sum((2, 3), keepdim=True) / cnt
    var = (((xd - mean) * m) ** 2).sum((2, 3), keepdim=True) / cnt
    rstd = torch.rsqrt(var + eps)
    y = ((xd - mean) * rstd).reshape(x.shape)
    shape = [1, c] + [1] * (x.dim() - 2)
    if w is not None:
        y = y * w.double().view(shape)
    if b is not None:
        y = y + b.double().view(shape)
    return y.to(x.dtype), mean.reshape(n_, groups).to(x.dtype), rstd.reshape(n_, groups).to(x.dtype)


def _vector_norm(rec, masks, args, kwargs, func):  # noqa: ANN001
    x, dims = args[0], rec.info["dims"]
    m = _dim_mask(x, masks, dims)
    out = torch.linalg.vector_norm(x.double() * m, rec.info["ord"], dims, rec.info["keepdim"])
    return out.to(func(*args, **kwargs).dtype)


_MASKED = {
    "mean": _mean_like, "var": _mean_like, "std": _mean_like, "var_mean": _mean_like,
    "std_mean": _mean_like, "sum": _mean_like, "nansum": _mean_like, "layer_norm": _layer_norm, "group_norm": _group_norm,
    "vector_norm": _vector_norm,
}  # fmt: skip


class MaskedReference(nn.Module):
    """Wraps the masked deep copy; calling it runs the masked forward (eval, no grad)."""

    def __init__(self, model: nn.Module, ops: dict[int, tuple[Any, list]]) -> None:
        super().__init__()
        self.model = model
        self._ops = ops

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # eval() again: modules that cache derived tensors in eval and clear them in train()
        # (timm's attention-bias caches) must take the same op path as the trace did
        self.model.eval()
        mode = _StatMask(self._ops)
        holder = type("_Stack", (), {"stack": []})()
        with torch.no_grad(), unfused_kernels(), module_stack(self.model, holder), mode:
            return run_model(self.model, kwargs or args)


def masked_reference(
    model: nn.Module, plan: PruningPlan, example_inputs: Any = None
) -> MaskedReference:
    """A deep copy of the *unpruned* ``model`` that computes what ``plan`` promises."""
    inputs = example_inputs if example_inputs is not None else plan.example_inputs
    ref = copy_model(model).eval()
    # a real trace: the oracle replays masks by op position in a real run, so its op
    # sequence must be the real one
    analysis = analyze(ref, inputs, meta=False)
    g = analysis.graph
    A = g.atoms
    masks = plan.masks(analysis)
    with torch.no_grad():
        for name in dict.fromkeys(g.used):
            t = g.tensors[name]
            hit = g.layouts.get(id(t))
            if hit is None or hit[0] is not t:
                continue
            for d, a in enumerate(hit[1]):
                pos = A.kept_positions(a, masks)
                if pos is None:
                    continue
                alive = torch.zeros(t.shape[d], dtype=torch.bool)
                alive[pos] = True
                shape = [1] * t.dim()
                shape[d] = t.shape[d]
                t.mul_(alive.view(shape).to(t.device, t.dtype))
    ops = {}
    ev = g.eval_records
    position = {i: k for k, i in enumerate(aligned([r.name for r in ev]))}
    for rec in ev:
        if rec.kind != "stat" or not rec.ins:
            continue
        dim_masks: list[torch.Tensor | None] = []
        touched = False
        for a in rec.ins[0]:
            pos = A.kept_positions(a, masks)
            if pos is None or pos.numel() == A.size(a):
                dim_masks.append(None)
                continue
            touched = True
            m = torch.zeros(A.size(a), dtype=torch.bool)
            m[pos] = True
            dim_masks.append(m)
        if touched and any(dim_masks[d] is not None for d in rec.info["dims"]):
            ops[position[rec.index]] = (rec, dim_masks)
    return MaskedReference(ref, ops)
