"""The tensors a model really computes with, seen through ``torch.nn.utils.parametrize``.

A parametrized weight is stored as ``parametrizations.weight.original`` plus the parametrization
modules' buffers (e.g. a mask); what the forward pass uses is ``module.weight``. Counting or
saving the stored tensors would count masked zeros as live weights and count masks as weights,
so every measure reads the effective tensors from here instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``named_modules`` without the parametrization internals (and without de-duplication)."""
    yield prefix, module
    skip = "parametrizations" if parametrize.is_parametrized(module) else None
    for name, child in module._modules.items():
        if child is not None and name != skip:
            yield from _walk(child, f"{prefix}{name}.")


def _named_tensors(model: nn.Module, *, buffers: bool) -> Iterator[tuple[str, Tensor]]:
    seen: set[int] = set()  # tied parameters / shared modules count once, as in model.parameters()
    with torch.no_grad(), parametrize.cached():
        for prefix, module in _walk(model):
            if parametrize.is_parametrized(module):
                for name, plist in module.parametrizations.items():
                    if id(plist) not in seen:
                        seen.add(id(plist))
                        yield prefix + name, getattr(module, name).detach()
            for name, param in module._parameters.items():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    yield prefix + name, param.detach()
            if buffers:
                for name, buf in module._buffers.items():
                    persistent = name not in module._non_persistent_buffers_set
                    if buf is not None and persistent and id(buf) not in seen:
                        seen.add(id(buf))
                        yield prefix + name, buf.detach()


def effective_named_parameters(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(name, tensor)`` for every parameter as the forward pass sees it (masks applied)."""
    return _named_tensors(model, buffers=False)


def effective_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict the model would have with every parametrization folded in.

    Keys are the plain names (``0.weight``, not ``0.parametrizations.weight.original``); mask
    buffers are left out; tied tensors appear once.
    """
    return dict(_named_tensors(model, buffers=True))
