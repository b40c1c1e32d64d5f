"""Masks as ``torch.nn.utils.parametrize`` parametrizations: a base concept every floor uses
(unstructured pruning makes them, lottery tickets reuse them, quantization and export fold them,
distributed runs compare them, checkpoints name tensors through them).

``module.weight`` becomes ``original * mask``: the optimizer keeps updating ``original`` (same
Parameter object, so existing optimizers stay valid) while masked entries of the effective
weight stay exactly zero and receive zero gradient. Both tensors are in ``state_dict()``, so a
model rebuilt with empty masks (``attach_mask`` with ones) loads a pruned checkpoint as is.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from netslim.core.copying import copy_model
from netslim.errors import ConfigError, UnsupportedModelError


class WeightMask(nn.Module):
    """Parametrization ``X -> X * mask``; ``mask`` (bool, or float in the weight's dtype) is kept
    as given, so pass a tensor nobody else writes to (``attach_mask`` copies for you)."""

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach())

    def forward(self, X: Tensor) -> Tensor:
        return X * self.mask

    def extra_repr(self) -> str:
        kept = int(self.mask.count_nonzero())
        return f"shape={tuple(self.mask.shape)}, kept={kept}/{self.mask.numel()}"


def _netslim_index(module: nn.Module, name: str) -> int | None:
    """Position of the netslim mask among ``module``'s parametrizations of ``name``, if any."""
    if not parametrize.is_parametrized(module, name):
        return None
    for index, p in enumerate(module.parametrizations[name]):
        if isinstance(p, WeightMask):
            return index
    return None


def _remove(module: nn.Module, name: str, *, leave_parametrized: bool) -> None:
    """``remove_parametrizations`` on a class of the module's own.

    parametrize gives each parametrized module a generated subclass, and ``copy.deepcopy`` shares
    that class between the copy and the original; removing a parametrization deletes the property
    from the class, which would silently strip ``.weight`` from every other module sharing it.
    """
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    parametrize.remove_parametrizations(module, name, leave_parametrized=leave_parametrized)


def get_mask(module: nn.Module, name: str = "weight") -> Tensor | None:
    """The mask buffer on ``module.<name>`` (True/1 = kept), or ``None`` if unmasked."""
    index = _netslim_index(module, name)
    return None if index is None else module.parametrizations[name][index].mask


def _prepared(module: nn.Module, name: str, mask: Tensor) -> Tensor:
    target = getattr(module, name, None)
    if not isinstance(target, Tensor):
        raise ConfigError(f"{type(module).__name__} has no tensor {name!r} to mask")
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != tuple(target.shape):
        raise ConfigError(
            f"mask shape {tuple(mask.shape)} does not match {name} shape {tuple(target.shape)}"
        )
    # bool masks keep any weight dtype; float masks follow the weight so the dtype never changes
    dtype = torch.bool if mask.dtype == torch.bool else target.dtype
    out = mask.detach().to(device=target.device, dtype=dtype)
    return out.clone() if out.data_ptr() == mask.data_ptr() else out  # never alias the caller's


def attach_mask(module: nn.Module, name: str, mask: Tensor) -> None:
    """Mask ``module.<name>`` with ``mask``, replacing the netslim mask already there (if any)."""
    mask = _prepared(module, name, mask)
    index = _netslim_index(module, name)
    if index is None:
        parametrize.register_parametrization(module, name, WeightMask(mask))
    else:
        module.parametrizations[name][index].mask = mask


def detach_mask(module: nn.Module, name: str = "weight") -> None:
    """Remove the netslim mask, restoring the unmasked original (other parametrizations stay)."""
    index = _netslim_index(module, name)
    if index is None:
        return
    plist = module.parametrizations[name]
    if len(plist) == 1:
        _remove(module, name, leave_parametrized=False)
    else:
        del plist[index]


def iter_masks(model: nn.Module) -> dict[str, Tensor]:
    """Every netslim mask in ``model``, keyed ``"module.path.weight"``, in module order."""
    masks: dict[str, Tensor] = {}
    for path, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for name in module.parametrizations:
            mask = get_mask(module, name)
            if mask is not None:
                masks[f"{path}.{name}" if path else name] = mask
    return masks


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every netslim mask into its weight (plain tensors, same values); returns the keys.

    Only masks are folded. A weight whose mask shares the parametrization with another
    (non-netslim) parametrization cannot be folded alone and raises, before anything changes.
    """
    found = []
    for path, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations):
            if _netslim_index(module, name) is None:
                continue
            key = f"{path}.{name}" if path else name
            if len(module.parametrizations[name]) != 1:
                raise UnsupportedModelError(
                    f"{key}: masked together with other parametrizations; remove those first"
                )
            found.append((key, module, name))
    for _, module, name in found:
        _remove(module, name, leave_parametrized=True)
    return [key for key, _, _ in found]


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Pruned fraction per masked tensor and overall (JSON-ready)."""
    layers: dict[str, dict[str, Any]] = {}
    total = pruned = 0
    for key, mask in iter_masks(model).items():
        numel = mask.numel()
        zeros = numel - int(mask.count_nonzero())
        layers[key] = {"numel": numel, "pruned": zeros, "sparsity": zeros / numel if numel else 0.0}
        total += numel
        pruned += zeros
    overall = {"numel": total, "pruned": pruned, "sparsity": pruned / total if total else 0.0}
    return {"layers": layers, "overall": overall}


_ORIGINAL = re.compile(r"\.parametrizations\.([^.]+)\.original$")


def canonical_name(name: str) -> str:
    """``fc.parametrizations.weight.original`` → ``fc.weight``: names that survive masking."""
    return _ORIGINAL.sub(r".\1", f".{name}")[1:]


def folded_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deployable copy: ``(deep copy with every mask made permanent, folded keys)``; ``model``
    itself is not changed. ``copy.deepcopy`` keeps parametrized modules on the *same*
    dynamically created class, and removing a parametrization deletes the weight property from
    that class, so each parametrized module of the copy gets its own class first."""
    work = copy_model(model)
    for module in work.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return work, make_permanent(work)
