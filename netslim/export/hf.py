"""Structurally pruned Hugging Face models → ``save_pretrained`` that stock ``from_pretrained``
loads.

The rule: a config can express a pruned model only if building the architecture from the
updated config gives every tensor the shape it has now. HF configs hold *one* size per kind of
layer, so pruning must be uniform across layers: the MLP width (``intermediate_size``) may
shrink if every layer keeps the same width; attention heads may shrink only in configs with an
explicit ``head_dim`` (Llama-style, ``num_attention_heads`` / ``num_key_value_heads``), not in
BERT-style configs where the head size is ``hidden_size / num_attention_heads``; the hidden size
may not change. ``sync_config`` applies these rules and then checks the claim by building the
model from the new config on the meta device and comparing every shape.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netslim.errors import UnsupportedModelError

# (module name suffix, config field, which size of the Linear): the MLP widths of common families
_WIDTH_RULES = (
    ("intermediate.dense", "intermediate_size", "out_features"),  # BERT, RoBERTa, MiniLM
    ("mlp.up_proj", "intermediate_size", "out_features"),  # Llama, Mistral, Qwen
    ("mlp.fc1", "intermediate_size", "out_features"),  # ViT-style, OPT (ffn_dim differs)
)
_HEAD_RULES = (
    ("self_attn.q_proj", "num_attention_heads"),
    ("self_attn.k_proj", "num_key_value_heads"),
)


def _uniform(values: list[int], field: str) -> int:
    if len(set(values)) != 1:
        raise UnsupportedModelError(
            f"{field} differs between layers ({sorted(set(values))}): a Hugging Face config holds "
            "one value for all layers, so this pruned model cannot be saved with save_pretrained"
        )
    return values[0]


def inferred_sizes(model: nn.Module) -> dict[str, int]:
    """Config fields implied by the model's current module shapes."""
    config = model.config
    found: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for suffix, field, attr in _WIDTH_RULES:
            if name.endswith(suffix) and hasattr(config, field):
                found.setdefault(field, []).append(getattr(module, attr))
        head_dim = getattr(config, "head_dim", None)
        for suffix, field in _HEAD_RULES:
            if head_dim and name.endswith(suffix) and hasattr(config, field):
                found.setdefault(field, []).append(module.out_features // head_dim)
    return {field: _uniform(values, field) for field, values in found.items()}


def _shape_mismatches(model: nn.Module, config: Any) -> list[str]:
    try:
        with torch.device("meta"):
            fresh = type(model)(config)
    except ValueError as exc:  # e.g. hidden_size not a multiple of the new head count
        return [f"the config does not build: {exc}"]
    expected = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return [
        f"{k}: config gives {expected.get(k)}, model has {actual.get(k)}"
        for k in sorted(set(expected) | set(actual))
        if expected.get(k) != actual.get(k)
    ]


def sync_config(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Update ``model.config`` to the pruned sizes; returns ``{field: (old, new)}``.

    Raises :class:`UnsupportedModelError` naming the tensors the config cannot express; the
    config is left unchanged then.
    """
    if not hasattr(model, "config") or not hasattr(model, "save_pretrained"):
        raise UnsupportedModelError(f"{type(model).__name__} is not a Hugging Face model")
    sizes = inferred_sizes(model)
    config = copy.deepcopy(model.config)
    changes = {}
    for field, value in sizes.items():
        old = getattr(config, field)
        if old != value:
            setattr(config, field, value)
            changes[field] = (old, value)
    bad = _shape_mismatches(model, config)
    if bad:
        raise UnsupportedModelError(
            "the Hugging Face config cannot express this pruned model: " + "; ".join(bad[:4])
        )
    model.config = config
    return changes


def _delete_bypassed_layers(model: nn.Module) -> None:
    """Delete the layers a latency plan bypassed from the model's layer list (the config then
    counts only the layers that run; stock ``from_pretrained`` would rebuild the bypassed ones
    with random weights)."""
    from netslim.core.blocks import BypassedBlock
    from netslim.core.removal import layer_lists, remove_blocks

    names = [
        f"{name}.{index}"
        for name, layers in layer_lists(model).items()
        for index, layer in enumerate(layers)
        if isinstance(layer, BypassedBlock)
    ]
    if names:
        remove_blocks(model, names)


def save_pretrained_pruned(model: nn.Module, directory: str | os.PathLike) -> dict[str, Any]:
    """``sync_config`` then ``save_pretrained`` (masks folded), loadable by stock
    ``AutoModel.from_pretrained(directory)``; layers a latency plan bypassed are deleted from
    the saved copy. Returns the config changes. When the config cannot express the pruned
    shapes, saves through :mod:`netslim.export.hf_shapes` instead (reloads with the stock
    ``from_pretrained`` once that module is imported) and returns its record."""
    from netslim.core.masks import folded_copy

    work, _ = folded_copy(model)
    layers_before = getattr(getattr(work, "config", None), "num_hidden_layers", None)
    _delete_bypassed_layers(work)
    layers_after = getattr(getattr(work, "config", None), "num_hidden_layers", None)
    layers = (
        {}
        if layers_after == layers_before
        else {"num_hidden_layers": [layers_before, layers_after]}
    )
    try:
        changes = sync_config(work)
    except UnsupportedModelError:
        # Per-layer widths or BERT-style heads: record the shapes in a netslim_<type> config.
        from netslim.export.hf_shapes import save_pretrained_shaped

        return {**save_pretrained_shaped(work, directory), **layers}
    work.save_pretrained(Path(directory))
    return {**{field: list(pair) for field, pair in changes.items()}, **layers}
