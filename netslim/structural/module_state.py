"""Module state a forward may change, saved before and put back after: tracing never changes a
model.

The engine runs the model's own forward to trace it and to check a pruning. Besides its
parameters, a module's forward may write plain attributes: lazily built tables (a detection
head's anchors and strides), cached shapes, dicts of cached masks, a tensor updated in place.
A shape-only (meta) trace would leave meta tensors there, and any trace leaves state computed
for the example inputs; the next forward then takes another path or fails (a detection head
that believes its anchors are built). ``unchanged(model)`` restores all of it: every module's
attribute dict (added keys dropped, rebound keys put back, mutable containers refilled in
place), the tensors held by attributes and buffers (data restored when written in place), and
the parameter/buffer/submodule tables. Parameters written in place are not copied up front
(it would double the model's memory); a forward that does that is reported instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from netslim.errors import PruningError


class _Saved:
    """One module's attribute dict: the objects, the contents of mutable containers, and a copy
    of every non-parameter tensor reachable from them (for in-place writes)."""

    def __init__(self, module: nn.Module, params: set[int]) -> None:
        self.attrs = dict(vars(module))
        self.contents: dict[int, tuple[Any, Any]] = {}
        self.tensors: dict[int, tuple[torch.Tensor, int, torch.Tensor | None]] = {}
        for key, value in self.attrs.items():
            if key != "_modules":  # submodules are saved on their own; only the table here
                self._walk(value, params)
        modules = self.attrs.get("_modules")
        if modules is not None:
            self.contents[id(modules)] = (modules, dict(modules))

    def _walk(self, value: Any, params: set[int]) -> None:
        if isinstance(value, torch.Tensor):
            if id(value) not in self.tensors:
                copy = None
                if id(value) not in params and not value.is_meta:
                    with torch.no_grad():
                        copy = value.detach().clone()
                self.tensors[id(value)] = (value, value._version, copy)
            return
        if isinstance(value, nn.Module) or id(value) in self.contents:
            return
        if isinstance(value, dict):
            self.contents[id(value)] = (value, dict(value))
            items = list(value.values())
        elif isinstance(value, list):
            self.contents[id(value)] = (value, list(value))
            items = value
        elif isinstance(value, set):
            self.contents[id(value)] = (value, set(value))
            return
        elif isinstance(value, tuple):
            items = list(value)
        else:
            return
        for v in items:
            self._walk(v, params)

    def restore(self, module: nn.Module) -> list[torch.Tensor]:
        """Put everything back; returns the parameters the forward wrote in place."""
        now = vars(module)
        for key in [k for k in now if k not in self.attrs]:
            del now[key]
        for key, value in self.attrs.items():
            if now.get(key, _MISSING) is not value:
                now[key] = value
        for obj, saved in self.contents.values():
            if isinstance(obj, dict):
                if not (
                    _same(list(obj), list(saved))
                    and _same(list(obj.values()), list(saved.values()))
                ):
                    obj.clear()
                    obj.update(saved)
            elif isinstance(obj, list):
                if not _same(obj, saved):
                    obj[:] = saved
            else:
                obj.clear()
                obj.update(saved)
        written = []
        for t, version, copy in self.tensors.values():
            if t._version == version:
                continue
            if copy is None:
                written.append(t)
                continue
            with torch.no_grad():
                if t.shape != copy.shape:  # resized in place (resize_, set_)
                    t.set_(copy.clone())
                else:
                    t.copy_(copy)
        return written


def _same(a: list, b: list) -> bool:
    """Same length and the very same objects (never ``==``: tensors compare elementwise)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class _Missing:
    pass


_MISSING = _Missing()


def save(model: nn.Module) -> dict[nn.Module, _Saved]:
    params = {id(p) for p in model.parameters()}
    return {m: _Saved(m, params) for m in model.modules()}


def restore(model: nn.Module, saved: dict[nn.Module, _Saved]) -> None:
    """Put ``saved`` back; a parameter the forward changed in place (which no copy can undo
    without doubling memory) is an error naming its module."""
    written: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in model.named_modules()}
    for m, s in saved.items():
        if s.restore(m):
            written.append((names.get(m, type(m).__name__), m))
    if written:
        where = written[0][0] or f"<{type(model).__name__}>"
        raise PruningError(
            "the forward changed a parameter in place; the engine cannot trace a model "
            "that modifies its own weights while running",
            where,
        )


@contextlib.contextmanager
def unchanged(model: nn.Module) -> Iterator[None]:
    """Run the block (a trace or check forward of ``model``) and put every module's state back
    as it was, whatever happens."""
    saved = save(model)
    try:
        yield
    finally:
        restore(model, saved)
