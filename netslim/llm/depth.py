"""Depth pruning by Block Influence (Men et al., 2024, "ShortGPT: Layers in Large Language
Models are More Redundant Than You Expect").

``BI_i = 1 − E_tokens[cos(x_i, x_{i+1})]``: a block whose output hidden state points where its
input already pointed changes little and is removed first. Scores come from one pass of the
dense model; the lowest-BI blocks are removed physically, and what generation depends on is
renumbered: ``config.num_hidden_layers``, ``config.layer_types`` and every attention's
``layer_idx`` (its KV-cache slot), so ``generate()`` and stock ``from_pretrained`` keep working.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from netslim.core.select import fraction_count
from netslim.errors import ConfigError, UnsupportedModelError
from netslim.llm.arch import family, layers, renumber
from netslim.llm.calibration import BlockInputs, run_block
from netslim.llm.config import LLMPrune


class InfluenceStep:
    """Records ``BI`` of each block from its (dense) input and output; changes nothing."""

    def __init__(self) -> None:
        self.influence: list[float] = []

    def __call__(self, index: int, block: nn.Module, inputs: BlockInputs | None) -> Tensor:
        assert inputs is not None
        out = run_block(block, inputs)
        self.influence.append(block_influence(inputs.hidden, out))
        return out


def block_influence(x_in: Tensor, x_out: Tensor) -> float:
    """``1 − mean cos`` over all tokens of ``(N, L, D)`` hidden states."""
    cos = torch.nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1)
    return float(1.0 - cos.mean())


def removal_count(config: LLMPrune, n_layers: int) -> int:
    count = (
        config.remove if config.remove is not None else fraction_count(config.sparsity, n_layers)
    )
    if count >= n_layers:
        raise ConfigError(f"cannot remove {count} of {n_layers} blocks: at least one must remain")
    return count


def choose(influence: list[float], count: int) -> list[int]:
    """Indices of the ``count`` lowest-influence blocks (ties: the later block goes first)."""
    order = sorted(range(len(influence)), key=lambda i: (influence[i], -i))
    return sorted(order[:count])


def check_depth_supported(model: nn.Module) -> None:
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise UnsupportedModelError(
            "this GPT-2 scales attention by 1/layer_idx, so renumbered blocks would compute "
            "differently after reloading; depth pruning is not supported for it"
        )


def new_layer_types(config: object, removed: list[int]) -> list[str] | None:
    types = getattr(config, "layer_types", None)
    if not types:
        return None
    return [t for i, t in enumerate(types) if i not in set(removed)]


def remove_blocks(model: nn.Module, removed: list[int]) -> None:
    """Physically drop blocks ``removed`` and update the config and ``layer_idx`` everywhere."""
    fam = family(model)
    check_depth_supported(model)
    blocks = layers(model, fam)
    gone = set(removed)
    kept = nn.ModuleList([b for i, b in enumerate(blocks) if i not in gone])
    parent_path, _, attr = fam.layers_path.rpartition(".")
    parent = model.get_submodule(parent_path)
    types = new_layer_types(model.config, removed)
    setattr(parent, attr, kept)
    model.config.num_hidden_layers = len(kept)
    if types is not None:
        model.config.layer_types = types
    renumber(model, fam)
