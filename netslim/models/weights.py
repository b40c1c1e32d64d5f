"""``--weights FILE``: bring trained weights to any model spec.

A spec builds the architecture (random init: netslim never downloads weights); the user's own
weights then come from a safetensors file or a PyTorch state dict read with
``weights_only=True``, so no pickled code runs. The keys must fit the model exactly, and a
mismatch is one line that says what differs, before any work starts.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from netslim.errors import ConfigError

# wrappers that training scripts commonly save around the state dict
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of ``path`` (safetensors, or ``torch.save`` of a state dict)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--weights {file}: no such file")
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(
                f"--weights {file}: not a readable safetensors file ({exc})"
            ) from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--weights {file}: not a state dict readable with weights_only=True ({first})"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ConfigError(f"--weights {file}: expected a {{name: tensor}} state dict")
    return state


def _strip_prefix(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Drop a ``module.`` prefix (DataParallel/DDP saves) when the model has none."""
    own = set(model.state_dict())
    if state and not (set(state) & own) and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _apply_torch_prune_masks(state: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict saved while ``torch.nn.utils.prune`` masks were attached holds
    ``NAME_orig`` and ``NAME_mask`` for each pruned ``NAME``: it loads as the pruned weights,
    ``orig × mask`` (its zeros are then ones netslim can remove: ``netslim compact``)."""
    out = dict(state)
    for key in own:
        orig, mask = f"{key}_orig", f"{key}_mask"
        if key not in out and orig in out and mask in out:
            out[key] = out.pop(orig) * out.pop(mask)
    return out


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Copy the weights in ``path`` into ``model`` (strict: every key, every shape)."""
    own = model.state_dict()
    state = _apply_torch_prune_masks(_strip_prefix(read_state_dict(path), model), own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
        raise ConfigError(f"--weights {path} does not fit the model: " + ", ".join(parts) + " keys")
    model.load_state_dict(state, strict=True)
    return model
