"""Depth pruning: find removable residual blocks, score them, remove them physically, or learn
which to drop with gates (static per block, or per input) and bake the result into a plain model.

Public API::

    find_blocks(model, example_inputs)          -> list[Block]
    score_blocks(model, blocks, batches, "block-influence" | "branch-norm" | "ablation")
    remove_blocks(model, names)                 # physical removal, HF config/layer_idx updated
    attach_gates / gate_penalty / bake_gates    # learned static or per-input gates
    Layers(...), Gates(...)                     # configs for netslim.prune_
"""

from netslim.core.blocks import Block, find_blocks, resolve_blocks
from netslim.core.removal import remove_blocks
from netslim.importance.blocks import (
    CRITERIA,
    Ablation,
    BlockInfluence,
    BranchNorm,
    block_influence,
    make_criterion,
    score_blocks,
)
from netslim.layers.config import Gates, Layers
from netslim.layers.gates import (
    GatedBlock,
    GatePenalty,
    RoutedBlock,
    attach_gates,
    bake_gates,
    detach_gates,
    executed_blocks,
    gate_states,
)

__all__ = [
    "CRITERIA",
    "Ablation",
    "Block",
    "BlockInfluence",
    "BranchNorm",
    "GatePenalty",
    "GatedBlock",
    "Gates",
    "Layers",
    "RoutedBlock",
    "attach_gates",
    "bake_gates",
    "block_influence",
    "detach_gates",
    "executed_blocks",
    "find_blocks",
    "gate_states",
    "make_criterion",
    "remove_blocks",
    "resolve_blocks",
    "score_blocks",
]
