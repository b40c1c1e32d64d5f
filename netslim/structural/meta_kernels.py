"""Fast results for ops whose meta kernel is a slow Python decomposition.

The engine traces and validates on meta tensors (shapes only). For a few common ops torch's meta
kernel is a Python reference implementation that costs more than the real op on a small input
(batch norm, layer norm, addmm, GELU: 1-3 ms each), which made the meta trace of a ViT-B slower
than its real forward. Each shortcut here returns what the meta kernel would (shape, dtype,
contiguous strides) in the plain, well-formed case only, and ``None`` otherwise, so that any
unusual or *invalid* call still goes through torch's own kernel and raises its own error: the
validation forward relies on meta kernels rejecting mismatched shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

aten = torch.ops.aten


def _eval_batch_norm(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """Eval batch norm: output shaped like the input, saved statistics empty (as on CPU)."""
    training = args[4] if len(args) > 4 else kwargs.get("training", False)
    if training:
        return None
    return _batch_norm_no_training(x, *args, **kwargs)


def _batch_norm_no_training(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    weight = args[0] if args else kwargs.get("weight")
    if x.dim() < 2 or (weight is not None and tuple(weight.shape) != (x.shape[1],)):
        return None
    return torch.empty_like(x), x.new_empty(0), x.new_empty(0)


def _layer_norm(x: torch.Tensor, normalized_shape: Any, weight: Any, bias: Any, eps: float) -> Any:
    k = len(normalized_shape)
    if k == 0 or k > x.dim() or tuple(x.shape[-k:]) != tuple(normalized_shape):
        return None
    for p in (weight, bias):
        if p is not None and tuple(p.shape) != tuple(normalized_shape):
            return None
    stats = (*x.shape[: x.dim() - k], *([1] * k))
    acc = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return (
        torch.empty(x.shape, dtype=x.dtype, device="meta"),
        torch.empty(stats, dtype=acc, device="meta"),
        torch.empty(stats, dtype=acc, device="meta"),
    )


def _addmm(bias: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, **kwargs: Any) -> Any:
    if m1.dim() != 2 or m2.dim() != 2 or m1.shape[1] != m2.shape[0]:
        return None
    if not (m1.dtype == m2.dtype == bias.dtype):
        return None
    out = (m1.shape[0], m2.shape[1])
    if bias.dim() > 2 or any(
        b not in (1, o) for b, o in zip(bias.shape[::-1], out[::-1], strict=False)
    ):
        return None
    return torch.empty(out, dtype=m1.dtype, device="meta")


def _unary(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """Float elementwise ops with one tensor argument: the output is shaped like the input."""
    if not x.is_floating_point() or not _plain(x):
        return None
    if any(isinstance(v, torch.Tensor) for v in (*args, *kwargs.values())):
        return None
    return torch.empty_like(x)


def _binary(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
    """add/sub/mul/div of two same-shaped, same-dtype contiguous float tensors, or of one and
    a Python number (the common residual, scaling and gating cases)."""
    if not isinstance(a, torch.Tensor) or not a.is_floating_point() or not _plain(a):
        return None
    if any(isinstance(v, torch.Tensor) for v in (*args, *kwargs.values())):
        return None
    if isinstance(b, torch.Tensor):
        if b.shape != a.shape or b.dtype != a.dtype or not _plain(b):
            return None
    elif type(b) not in (int, float):
        return None
    return torch.empty_like(a)


def _plain(t: torch.Tensor) -> bool:
    return t.is_contiguous() and not t.is_complex()


_UNARY = ("gelu", "silu", "relu", "sigmoid", "tanh", "neg", "rsqrt", "sqrt", "exp", "erf")
_BINARY = ("add.Tensor", "sub.Tensor", "mul.Tensor", "div.Tensor", "add.Scalar", "mul.Scalar")

SHORTCUTS: dict[Any, Callable[..., Any]] = {
    aten.native_batch_norm.default: _eval_batch_norm,
    aten._native_batch_norm_legit_no_training.default: _batch_norm_no_training,
    aten.native_layer_norm.default: _layer_norm,
    aten.addmm.default: _addmm,
    **{getattr(aten, name).default: _unary for name in _UNARY},
    **{getattr(getattr(aten, n.split(".")[0]), n.split(".")[1]): _binary for n in _BINARY},
}


def meta_shortcut(func: Any, args: tuple, kwargs: dict) -> Any:
    """The meta result of ``func(*args, **kwargs)`` when a shortcut covers this call; None:
    run the op's own kernel (real tensors, other ops, and anything out of the plain case)."""
    shortcut = SHORTCUTS.get(func)
    if shortcut is None or not args or not isinstance(args[0], torch.Tensor):
        return None
    if not args[0].is_meta:
        return None
    return shortcut(*args, **kwargs)
