"""Where things live in a decoder-only Hugging Face model, per family.

The calibration engine only needs a few facts about a model: the list of decoder blocks, the
linear layers inside one block (as ``(out, in)`` matrices, whatever their storage), and the
config keys that count layers. Keeping them here lets every method stay family-agnostic.
Supported: the LLaMA family (LLaMA, Mistral, Qwen2, SmolLM — ``model.layers``) and GPT-2
(``transformer.h``, whose ``Conv1D`` stores weights transposed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from netslim.errors import UnsupportedModelError

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo", "olmo2", "granite")
FAMILIES = (*LLAMA_LIKE, "gpt2")


@dataclass(frozen=True)
class Family:
    """Naming of one architecture family: block list path and block-key prefix in state dicts."""

    name: str
    layers_path: str  # attribute path from the *ForCausalLM to the ModuleList of blocks
    prefix: str  # state-dict key prefix of block i is f"{prefix}.{i}."

    @property
    def llama_like(self) -> bool:
        return self.name != "gpt2"


def family_of(model_type: str | None) -> Family:
    """The family for a ``config.model_type``; anything else is an :class:`UnsupportedModelError`."""
    if model_type == "gpt2":
        return Family("gpt2", "transformer.h", "transformer.h")
    if model_type in LLAMA_LIKE:
        return Family(model_type, "model.layers", "model.layers")
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not a supported decoder-only causal LM "
        f"(supported: {', '.join(FAMILIES)})"
    )


def family(model: nn.Module) -> Family:
    config = getattr(model, "config", None)
    fam = family_of(getattr(config, "model_type", None))
    try:
        layers(model, fam)
    except AttributeError as exc:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no {fam.layers_path}: not a *ForCausalLM model"
        ) from exc
    return fam


def layers(model: nn.Module, fam: Family | None = None) -> nn.ModuleList:
    fam = fam or family(model)
    obj: nn.Module = model
    for part in fam.layers_path.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def block_linears(block: nn.Module) -> dict[str, nn.Module]:
    """The prunable matrices of one block, keyed by their path inside the block."""
    return {name: m for name, m in block.named_modules() if name and is_linear(m)}


def weight_oi(module: nn.Module) -> Tensor:
    """The weight as an ``(out, in)`` matrix (a transposed view for GPT-2's ``Conv1D``)."""
    w = module.weight
    return w.t() if type(module).__name__ == "Conv1D" else w


def set_weight_oi(module: nn.Module, value: Tensor) -> None:
    """Write an ``(out, in)`` matrix back in the module's storage layout and dtype."""
    target = module.weight
    value = value.t() if type(module).__name__ == "Conv1D" else value
    with torch.no_grad():
        target.copy_(value.to(target.dtype))


def renumber(model: nn.Module, fam: Family | None = None) -> None:
    """Make every attention's ``layer_idx`` equal its block position (KV cache slots follow it)."""
    for i, block in enumerate(layers(model, fam)):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
