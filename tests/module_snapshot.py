"""A deep picture of a model's state for 'nothing changed' checks: every parameter and buffer
(data and object identity) and every module attribute, containers walked, tensors compared
bit for bit. Stricter than a state_dict: caches a forward writes on modules show up here."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _picture(value: Any, depth: int = 0) -> Any:
    if isinstance(value, torch.Tensor):
        data = None if value.is_meta else value.detach().clone()
        return ("tensor", id(value), value.device.type, value.dtype, tuple(value.shape), data)
    if isinstance(value, nn.Module):
        return ("module", id(value))
    if depth > 4:
        return ("deep", id(value))
    if isinstance(value, dict):
        return ("dict", id(value), [(k, _picture(v, depth + 1)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_picture(v, depth + 1) for v in value])
    if isinstance(value, (int, float, str, bool, type(None), torch.Size)):
        return ("value", value)
    return ("object", id(value))


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {n: {k: _picture(v) for k, v in vars(m).items()} for n, m in model.named_modules()}


def _equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def differences(model: nn.Module, before: dict[str, Any]) -> list[str]:
    """Module attributes that differ from ``before`` (empty: bit-identical)."""
    now = snapshot(model)
    out = []
    for name in sorted(set(now) | set(before)):
        a, b = before.get(name, {}), now.get(name, {})
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b or not _equal(a[key], b[key]):
                out.append(f"{name or '<model>'}.{key}")
    return out


def has_meta(model: nn.Module) -> list[str]:
    """Module attributes that hold a meta tensor (a shape-only trace's leftover)."""

    def walk(v: Any, depth: int = 0) -> bool:
        if isinstance(v, torch.Tensor):
            return v.is_meta
        if depth > 4 or isinstance(v, nn.Module):
            return False
        if isinstance(v, dict):
            return any(walk(x, depth + 1) for x in v.values())
        if isinstance(v, (list, tuple)):
            return any(walk(x, depth + 1) for x in v)
        return False

    return [f"{n}.{k}" for n, m in model.named_modules() for k, v in vars(m).items() if walk(v)]
