"""Block-wise reconstruction after one-shot pruning, masks fixed.

Layer-wise methods (SparseGPT, Wanda) each minimise the error of one linear layer given its
inputs; the errors of the seven linears of a block then add up through the nonlinearities, and
those of earlier blocks compound. A few optimizer steps per block on the block's own output fix
much of that (the block-reconstruction step of BRECQ, Li et al., 2021, and of the LLM pruning
follow-ups): the *pruned* block, fed what the already pruned blocks produce, is fitted to what
the *dense* model's block produces at that depth on the same calibration sequences. Targets are
the dense model's hidden states, not the dense block applied to pruned inputs, so each block
also absorbs part of the error that reached it. Pruned weights stay exactly zero: their
gradients are masked and they are re-zeroed after every step.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from netslim.llm.calibration import BlockInputs


def _output(block: nn.Module, hidden: Tensor, inputs: BlockInputs) -> Tensor:
    out = block(hidden, *inputs.args, **inputs.kwargs)
    return out[0] if isinstance(out, tuple) else out


def reconstruct_block(
    block: nn.Module,
    inputs: BlockInputs,
    target: Tensor,
    masks: dict[str, Tensor],
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int = 0,
) -> dict[str, float]:
    """Fit ``block(inputs.hidden)`` to ``target`` (both ``(N, L, D)``) with Adam for ``steps``
    steps of ``batch`` sequences; ``masks``: parameter name → keep-mask (True = trainable).

    Returns the loss of the first and of the last step and the seconds spent. The block's
    parameters keep their ``requires_grad`` flags as they were.
    """
    start = time.perf_counter()
    params = dict(block.named_parameters())
    flags = {name: p.requires_grad for name, p in params.items()}
    losses: list[float] = []
    gen = torch.Generator().manual_seed(seed)
    n = inputs.hidden.shape[0]
    order = torch.randperm(n, generator=gen)
    dtype = next(block.parameters()).dtype
    try:
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params.values(), lr=lr, foreach=False)
        with torch.enable_grad():
            pos = 0
            for _ in range(steps):
                if pos + batch > n:
                    order, pos = torch.randperm(n, generator=gen), 0
                idx = order[pos : pos + batch]
                pos += batch
                out = _batched(block, inputs.hidden[idx].to(dtype), inputs)
                loss = torch.nn.functional.mse_loss(out.float(), target[idx])
                opt.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                loss.backward()
                for name, mask in masks.items():
                    if params[name].grad is not None:
                        params[name].grad.mul_(mask)
                opt.step()
                with torch.no_grad():
                    for name, mask in masks.items():
                        params[name].mul_(mask)
        del opt
    finally:
        for name, p in params.items():
            p.requires_grad_(flags[name])
            p.grad = None
    return {
        "first_loss": losses[0] if losses else 0.0,
        "last_loss": losses[-1] if losses else 0.0,
        "seconds": time.perf_counter() - start,
    }


def _batched(block: nn.Module, hidden: Tensor, inputs: BlockInputs) -> Tensor:
    """The block on a batch of sequences: the captured mask/rotary arguments are those of one
    sequence and broadcast over the batch."""
    return _output(block, hidden, inputs)
