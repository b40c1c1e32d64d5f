"""Physical removal of blocks, with the bookkeeping Hugging Face models need to keep working.

Blocks are deleted from their ``nn.Sequential``/``nn.ModuleList`` (both renumber their children),
rather than replaced by ``nn.Identity``: the saved model then has fewer parameters *and* fewer
modules, and a Hugging Face model's weights line up with a config that simply has fewer layers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from torch import nn

from netslim.core.blocks import containers
from netslim.errors import ConfigError


def _group(model: nn.Module, names: Sequence[str]) -> dict[str, list[int]]:
    holders = containers(model)
    grouped: dict[str, list[int]] = defaultdict(list)
    for name in names:
        container, _, index = name.rpartition(".")
        if container not in holders or not index.isdigit() or int(index) >= len(holders[container]):
            raise ConfigError(f"block {name!r} is not a child of an nn.Sequential/nn.ModuleList")
        grouped[container].append(int(index))
    for container, indices in grouped.items():
        if len(set(indices)) != len(indices):
            raise ConfigError(f"a block of {container!r} is named twice: {sorted(indices)}")
    return grouped


def layer_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """The ModuleLists a Hugging Face config counts in ``num_hidden_layers``."""
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None)
    if count is None:
        return {}
    return {
        name: module
        for name, module in containers(model).items()
        if isinstance(module, nn.ModuleList) and len(module) == count
    }


def remove_blocks(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Delete the blocks ``names`` (as named *before* this call) and return them sorted.

    For Hugging Face models whose main layer list shrinks, ``config.num_hidden_layers`` and
    ``config.layer_types`` follow, and every submodule's ``layer_idx`` (the KV-cache slot the
    attention writes to) is renumbered to its new position, so ``generate()`` and
    ``save_pretrained``/``from_pretrained`` keep working. Validation happens before anything is
    deleted, so a bad name leaves the model untouched.
    """
    grouped = _group(model, names)
    hf_lists = layer_lists(model)
    holders = containers(model)
    config = getattr(model, "config", None)
    for container, indices in grouped.items():
        holder = holders[container]
        for index in sorted(indices, reverse=True):
            del holder[index]
        if container in hf_lists and config is not None:
            gone = set(indices)
            types = getattr(config, "layer_types", None)
            if types:
                config.layer_types = [t for i, t in enumerate(types) if i not in gone]
            config.num_hidden_layers = len(holder)
            for position, layer in enumerate(holder):
                for module in layer.modules():
                    if isinstance(getattr(module, "layer_idx", None), int):
                        module.layer_idx = position
    return sorted(names, key=lambda n: (n.rpartition(".")[0], int(n.rpartition(".")[2])))
