"""Hand masks to and from ``torch.nn.utils.prune``.

torch's pruning stores ``weight_orig`` (Parameter) and ``weight_mask`` (buffer) and recomputes
``weight = weight_orig * weight_mask`` in a forward pre-hook; netslim computes the same product
in a parametrization. Both sides multiply the same original by the same 0/1 values, so effective
weights match bit for bit and the original Parameter object is kept (optimizers stay valid).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from netslim.core.masks import attach_mask, detach_mask, iter_masks
from netslim.errors import UnsupportedModelError


def _torch_pruned(model: nn.Module) -> list[tuple[str, nn.Module, str, int]]:
    """(key, module, tensor name, hook id) for every torch-pruned tensor."""
    found = []
    for path, module in model.named_modules():
        for hook_id, hook in module._forward_pre_hooks.items():
            if isinstance(hook, prune.BasePruningMethod):
                name = hook._tensor_name
                found.append((f"{path}.{name}" if path else name, module, name, hook_id))
    return found


def from_torch_prune(model: nn.Module) -> list[str]:
    """Replace every ``torch.nn.utils.prune`` reparametrization by a netslim mask; returns keys."""
    found = _torch_pruned(model)
    for key, module, name, _ in found:  # check everything before changing anything
        mask = getattr(module, name + "_mask")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise UnsupportedModelError(f"{key}: torch prune mask is not 0/1, cannot adopt it")
    for _, module, name, hook_id in found:
        original = module._parameters.pop(name + "_orig")
        mask = module._buffers.pop(name + "_mask")
        del module._forward_pre_hooks[hook_id]
        delattr(module, name)  # the plain tensor attribute torch's hook kept up to date
        module.register_parameter(name, original)
        attach_mask(module, name, mask != 0)
    return [key for key, *_ in found]


def to_torch_prune(model: nn.Module) -> list[str]:
    """Replace every netslim mask by ``prune.custom_from_mask``; returns keys."""
    masks = iter_masks(model)
    entries = []
    for key, mask in masks.items():
        path, _, name = key.rpartition(".")
        module = model.get_submodule(path) if path else model
        if len(module.parametrizations[name]) != 1:
            raise UnsupportedModelError(f"{key}: masked together with other parametrizations")
        entries.append((module, name, mask.clone()))
    for module, name, mask in entries:
        detach_mask(module, name)
        prune.custom_from_mask(module, name, mask=mask.to(torch.bool))
    return list(masks)
