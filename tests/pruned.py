"""How much a model was pruned, counted by hand from its tensors (no netslim code), for the
'something was pruned' checks that must fail when pruning did nothing (`pytest --noop-prune`
leaves the caller's model untouched; a report can still say what a copy lost)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def effective_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter as the forward sees it: a parametrized weight through its
    parametrization (a mask applied), the others as stored; tied tensors once."""
    out: dict[int, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue  # its ``original`` is read through the owner below
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                out.setdefault(id(module.parametrizations[name].original), getattr(module, name))
        for p in module._parameters.values():
            if p is not None:
                out.setdefault(id(p), p)
    return list(out.values())


def param_count(model: nn.Module) -> int:
    return sum(t.numel() for t in effective_parameters(model))


def zero_fraction(tensors: list[torch.Tensor] | nn.Module) -> float:
    """Exact zeros over all entries of ``tensors`` (or of a model's effective parameters)."""
    if isinstance(tensors, nn.Module):
        tensors = effective_parameters(tensors)
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / max(total, 1)


def weights(
    model: nn.Module, types: tuple[type, ...] = (nn.Linear, nn.Conv2d)
) -> list[torch.Tensor]:
    """The (masked) weights of the model's layers of these types."""
    return [m.weight for m in model.modules() if isinstance(m, types)]
