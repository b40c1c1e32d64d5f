"""Keeping an optimizer valid when structural pruning replaces parameters mid-training.

Physical channel removal swaps ``layer.weight`` for a smaller Parameter. The optimizer still
holds the old object and its momentum / Adam moments for the removed rows. Resetting those
buffers would silently restart the optimizer's memory for the kept channels too, so
:func:`shrink_optimizer_state` slices the buffers with the same index selections the engine used
on the weights and moves them onto the new Parameter.

How the structural engine hands over a change (it never sees the optimizer)::

    from netslim.training.optim_state import note_replacements
    note_replacements(model, {old_weight: (new_weight, [(0, kept_rows)]),
                              next_weight: (new_next, [(1, kept_rows)]),
                              dropped_param: None})   # removed entirely

``netslim.training.train`` picks the note up after ``on_step`` returns, shrinks its optimizer,
rebuilds the DistributedDataParallel wrapper and checks every rank agrees. Code with its own loop
calls ``shrink_optimizer_state(optimizer, take_replacements(model))`` itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from netslim.errors import ConfigError

Selection = Sequence[tuple[int, Tensor]]
"""``[(dim, kept_indices), ...]`` applied in order: ``w.index_select(dim, kept)`` for each."""

Replacement = tuple[nn.Parameter, Selection] | None  # None: the parameter is gone
_ATTR = "_netslim_param_replacements"


def select(tensor: Tensor, selection: Selection) -> Tensor:
    """``tensor`` with only the kept indices along each selected dim."""
    for dim, kept in selection:
        if not -tensor.dim() <= dim < tensor.dim():
            raise ConfigError(
                f"selection dim {dim} is out of range for shape {tuple(tensor.shape)}"
            )
        kept = torch.as_tensor(kept, dtype=torch.long, device=tensor.device)
        if kept.numel() and (kept.min() < 0 or kept.max() >= tensor.shape[dim]):
            raise ConfigError(
                f"selection indices out of range for dim {dim} of shape {tuple(tensor.shape)}"
            )
        tensor = tensor.index_select(dim, kept)
    return tensor


def shrink_optimizer_state(
    optimizer: torch.optim.Optimizer, replacements: Mapping[nn.Parameter, Replacement]
) -> int:
    """Point ``optimizer`` at the new parameters and slice their per-element state to match.

    Every state tensor shaped like the old parameter (SGD ``momentum_buffer``, Adam ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``, ...) is sliced with the parameter's selection; scalars
    (``step``) are kept as they are. A state tensor of any other shape cannot be mapped and
    raises ConfigError before anything changes. Parameters the optimizer does not hold are
    ignored (frozen layers). Returns how many optimizer parameters were replaced or dropped.
    """
    planned: list[tuple[nn.Parameter, Replacement, dict]] = []
    for group in optimizer.param_groups:
        for old in group["params"]:
            if old not in replacements:
                continue
            replacement = replacements[old]
            new_state: dict = {}
            for key, value in optimizer.state.get(old, {}).items():
                new_state[key] = _shrunk(key, value, old, replacement)
            planned.append((old, replacement, new_state))
    for old, replacement, new_state in planned:
        optimizer.state.pop(old, None)
        if replacement is not None and new_state:
            optimizer.state[replacement[0]] = new_state
    for group in optimizer.param_groups:
        kept = []
        for old in group["params"]:
            if old in replacements:
                if replacements[old] is not None:
                    kept.append(replacements[old][0])
            else:
                kept.append(old)
        group["params"] = kept
    return len(planned)


def _shrunk(key: str, value: object, old: nn.Parameter, replacement: Replacement) -> object:
    if replacement is None or not isinstance(value, Tensor) or value.dim() == 0:
        return value
    new, selection = replacement
    if tuple(value.shape) != tuple(old.shape):
        raise ConfigError(
            f"optimizer state {key!r} has shape {tuple(value.shape)}, not the parameter's "
            f"{tuple(old.shape)}: cannot map it onto the pruned parameter"
        )
    sliced = select(value.detach(), selection).clone()
    if tuple(sliced.shape) != tuple(new.shape):
        raise ConfigError(
            f"selection turns {tuple(old.shape)} into {tuple(sliced.shape)}, but the new "
            f"parameter has shape {tuple(new.shape)}"
        )
    return sliced.to(new.device)


def note_replacements(model: nn.Module, replacements: Mapping[nn.Parameter, Replacement]) -> None:
    """Record parameter swaps on ``model`` for the training loop to apply to its optimizer.

    The old parameters are held by weak reference: only an optimizer needs to hear about a swap,
    and an optimizer keeps its parameters alive. After a one-shot prune with no optimizer
    around, the removed full-size tensors are freed instead of living on beside the model.
    """
    pending: dict[int, tuple[weakref.ref, Replacement]] = dict(getattr(model, _ATTR, {}))
    for old, replacement in replacements.items():
        pending[id(old)] = (weakref.ref(old), replacement)
    object.__setattr__(model, _ATTR, pending)


def take_replacements(model: nn.Module) -> dict[nn.Parameter, Replacement]:
    """The swaps noted since the last call whose old parameter is still alive (and forget them)."""
    pending = dict(getattr(model, _ATTR, {}))
    object.__setattr__(model, _ATTR, {})
    alive = ((ref(), replacement) for ref, replacement in pending.values())
    return {old: replacement for old, replacement in alive if old is not None}
