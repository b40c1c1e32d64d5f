"""Uneven sparsity among the linears of one block, the block's own sparsity kept.

Layer-wise pruning gives every linear of a block the block's sparsity, yet the linears are not
equally sensitive: the query and key projections only reach the block's output through the
attention softmax, which flattens their errors, while the MLP's errors land in the residual
stream as they are. ``LLMPrune(sparsity_offsets={"q_proj": 0.15, "k_proj": 0.15})`` prunes the
linears whose name ends with a key that much more (or less, for a negative offset); the block's
other linears share the opposite amount, weighted by their sizes, so the block — and with it
OWL's per-block plan and the model's total — keeps its sparsity.
"""

from __future__ import annotations

from torch import nn

from netslim.errors import ConfigError
from netslim.llm.arch import block_linears
from netslim.llm.config import LLMPrune


def matches(name: str, key: str) -> bool:
    """``key`` names ``name`` when it is the whole dotted path or its tail (``q_proj`` matches
    ``self_attn.q_proj``, not ``self_attn.qq_proj``)."""
    return name == key or name.endswith("." + key)


def linear_sparsities(
    sizes: dict[str, int], sparsity: float, offsets: dict[str, float], *, where: str = "block"
) -> dict[str, float]:
    """Each linear's sparsity: ``sparsity + offsets[key]`` for the linears a key matches, and
    one shared shift for the rest that keeps the size-weighted mean at ``sparsity``.

    ``sizes``: linear name → weight count. Raises :class:`ConfigError` naming ``where`` when a
    key matches no linear, every linear is matched (nothing left to balance), or a sparsity
    leaves (0, 1)."""
    shifted: dict[str, float] = {}
    for key, offset in offsets.items():
        hit = [name for name in sizes if matches(name, key)]
        if not hit:
            raise ConfigError(
                f"sparsity_offsets: {key!r} matches no linear of {where} "
                f"(its linears: {', '.join(sizes)})"
            )
        for name in hit:
            shifted[name] = shifted.get(name, 0.0) + offset
    rest = [name for name in sizes if name not in shifted]
    if not rest:
        raise ConfigError(
            f"sparsity_offsets: every linear of {where} is offset, none is left to keep its "
            f"sparsity at {sparsity}"
        )
    moved = sum(offset * sizes[name] for name, offset in shifted.items())
    share = -moved / sum(sizes[name] for name in rest)
    result = {name: sparsity + shifted.get(name, share) for name in sizes}
    for name, value in result.items():
        if not 0.0 < value < 1.0:
            raise ConfigError(
                f"sparsity_offsets: {where} {name} would get sparsity {value:.3f}, outside (0, 1)"
            )
    return result


def linear_sizes(block: nn.Module) -> dict[str, int]:
    """The block's prunable linears (path inside the block → weight count)."""
    return {name: module.weight.numel() for name, module in block_linears(block).items()}


def check_offsets(config: LLMPrune, blocks: list[nn.Module]) -> None:
    """Before any work: every block's linears stay in (0, 1) wherever OWL may put the block
    (``sparsity ± owl``; the shares are linear in it, so the two ends decide)."""
    if not config.sparsity_offsets:
        return
    for index, block in enumerate(blocks):
        sizes = linear_sizes(block)
        for sparsity in {config.sparsity - config.owl, config.sparsity + config.owl}:
            linear_sparsities(sizes, sparsity, config.sparsity_offsets, where=f"block {index}")
