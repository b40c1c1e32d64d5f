"""The sequential calibration loop shared by every method and both storage paths.

Block ``i`` is pruned with the calibration activations that the *already pruned* blocks
``0..i-1`` produce, and its outputs are recomputed with its pruned weights before block ``i+1``
(the sequential procedure of SparseGPT and Wanda): errors of early blocks are then seen, and
partly compensated, by later ones. Only one block and the ``(N, L, D)`` activations are live
at a time, which is what lets the streaming path keep the rest of the model on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from netslim._runtime import one_thread
from netslim.llm.arch import block_linears, layers, set_weight_oi, weight_oi
from netslim.llm.calibration import BlockInputs, collecting, run_block
from netslim.llm.config import LLMPrune
from netslim.llm.methods import get_method
from netslim.llm.offsets import linear_sizes, linear_sparsities
from netslim.llm.reconstruct import reconstruct_block


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


def block_seed(seed: int, index: int) -> int:
    """Block ``index``'s reconstruction seed under the config's ``seed``: seed 0 gives each block
    its index (the order every earlier result used); each further seed moves every block by
    1000, so blocks of different seeds never share an order in a model of under 1000 blocks."""
    return 1000 * seed + index


class WeightStep:
    """Magnitude / Wanda / SparseGPT on every linear of a block; counts zeros as it goes.

    ``sparsities``: one sparsity per block (OWL), else ``config.sparsity`` everywhere. With
    ``config.reconstruct`` the step fits each pruned block to the dense block's output
    (:mod:`netslim.llm.reconstruct`): ``dense_outputs`` when a dense pass already kept them
    (each is dropped once used), else the step carries the dense hidden states alongside the
    pruned ones and runs each dense block once more. ``costs`` holds the seconds of each part.
    ``scratch``: where Adam's moments go instead of memory (the streaming path's output folder).
    """

    def __init__(
        self,
        config: LLMPrune,
        sparsities: list[float] | None = None,
        dense_outputs: list[Tensor | None] | None = None,
        scratch: Path | None = None,
    ):
        self.config = config
        self.scratch = scratch
        self.sparsities = sparsities
        self.dense_outputs = dense_outputs
        self.fn, self.needs = get_method(config.method)
        self.zeros = 0
        self.total = 0
        self.dense_hidden: Tensor | None = None
        self.costs = {"prune": 0.0, "reconstruct": 0.0, "dense_targets": 0.0}
        self.fit: list[dict[str, float]] = []

    def _block_config(self, index: int) -> LLMPrune:
        if self.sparsities is None:
            return self.config
        return replace(self.config, sparsity=self.sparsities[index], owl=0.0)

    @property
    def needs_data(self) -> bool:
        return bool(self.needs)

    def __call__(self, index: int, block: nn.Module, inputs: BlockInputs | None) -> Tensor | None:
        linears = block_linears(block)
        config = self._block_config(index)
        offsets = self.config.sparsity_offsets
        shares = (
            linear_sparsities(linear_sizes(block), config.sparsity, offsets, where=f"block {index}")
            if offsets
            else {}
        )
        fit = self.config.reconstruct > 0 and inputs is not None
        target = None
        if fit and self.dense_outputs is not None:
            target, self.dense_outputs[index] = self.dense_outputs[index], None
        elif fit:
            assert inputs is not None
            start = time.perf_counter()
            if self.dense_hidden is None:
                self.dense_hidden = inputs.hidden.clone()
            target = run_block(block, inputs, self.dense_hidden)  # dense block, dense stream
            self.costs["dense_targets"] += time.perf_counter() - start
        start = time.perf_counter()
        stats = {}
        if self.needs and inputs is not None:
            with collecting(block, dict.fromkeys(linears, set(self.needs))) as stats:
                run_block(block, inputs)
        with torch.no_grad(), one_thread():
            for name, module in linears.items():
                own = replace(config, sparsity=shares[name]) if shares else config
                pruned = self.fn(weight_oi(module).detach().float(), stats.get(name), own)
                set_weight_oi(module, pruned)
        self.costs["prune"] += time.perf_counter() - start
        if fit:
            assert inputs is not None and target is not None
            masks = {module.weight: module.weight.detach() != 0 for module in linears.values()}
            result = reconstruct_block(
                block, inputs, target, masks, steps=self.config.reconstruct,
                lr=self.config.reconstruct_lr, batch=self.config.reconstruct_batch,
                seed=block_seed(self.config.seed, index),
                optimizer=self.config.reconstruct_optimizer, scratch=self.scratch,
                train_dtype=self.config.train_dtype,
            )  # fmt: skip
            self.costs["reconstruct"] += result["seconds"]
            self.fit.append(result)
            if self.dense_outputs is None:
                self.dense_hidden = target
        for module in linears.values():
            w = weight_oi(module)
            self.zeros += int((w == 0).sum())
            self.total += w.numel()
        return None
