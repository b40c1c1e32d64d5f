"""The sequential calibration loop shared by every method and both storage paths.

Block ``i`` is pruned with the calibration activations that the *already pruned* blocks
``0..i-1`` produce, and its outputs are recomputed with its pruned weights before block ``i+1``
(the sequential procedure of SparseGPT and Wanda): errors of early blocks are then seen, and
partly compensated, by later ones. Only one block and the ``(N, L, D)`` activations are live
at a time, which is what lets the streaming path keep the rest of the model on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from netslim._runtime import one_thread
from netslim.llm.arch import block_linears, layers, set_weight_oi, weight_oi
from netslim.llm.calibration import BlockInputs, collecting, run_block
from netslim.llm.config import LLMPrune
from netslim.llm.methods import get_method


class BlockSource(Protocol):
    """Where blocks come from and go back to (memory, or safetensors shards on disk)."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> nn.Module: ...

    def release(self, index: int, block: nn.Module) -> None: ...


class ModelBlocks:
    """Blocks of a model in memory; keeps a copy of each block it hands out until ``commit``,
    so a failure part-way can ``rollback`` to the unpruned weights (all-or-nothing)."""

    def __init__(self, model: nn.Module):
        self.blocks = layers(model)
        self.saved: dict[int, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.blocks)

    def load(self, index: int) -> nn.Module:
        block = self.blocks[index]
        self.saved[index] = {k: v.detach().clone() for k, v in block.state_dict().items()}
        return block

    def release(self, index: int, block: nn.Module) -> None:
        pass

    def rollback(self) -> None:
        for index, state in self.saved.items():
            self.blocks[index].load_state_dict(state)
        self.saved.clear()

    def commit(self) -> None:
        self.saved.clear()


Step = Callable[[int, nn.Module, "BlockInputs | None"], "Tensor | None"]


def run_sequential(source: BlockSource, inputs: BlockInputs | None, step: Step) -> None:
    """``step(i, block, inputs)`` prunes block ``i`` in place; it may return the block's outputs
    when they are already known (nothing changed), else they are recomputed here."""
    for index in range(len(source)):
        block = source.load(index)
        out = step(index, block, inputs)
        if inputs is not None:
            inputs.hidden = out if out is not None else run_block(block, inputs)
        source.release(index, block)


class WeightStep:
    """Magnitude / Wanda / SparseGPT on every linear of a block; counts zeros as it goes."""

    def __init__(self, config: LLMPrune):
        self.config = config
        self.fn, self.needs = get_method(config.method)
        self.zeros = 0
        self.total = 0

    @property
    def needs_data(self) -> bool:
        return bool(self.needs)

    def __call__(self, index: int, block: nn.Module, inputs: BlockInputs | None) -> Tensor | None:
        linears = block_linears(block)
        stats = {}
        if self.needs and inputs is not None:
            with collecting(block, dict.fromkeys(linears, set(self.needs))) as stats:
                run_block(block, inputs)
        with torch.no_grad(), one_thread():
            for name, module in linears.items():
                pruned = self.fn(weight_oi(module).detach().float(), stats.get(name), self.config)
                set_weight_oi(module, pruned)
                self.zeros += int((pruned == 0).sum())
                self.total += pruned.numel()
        return None
