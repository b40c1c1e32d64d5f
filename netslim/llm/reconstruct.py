"""Block-wise reconstruction after one-shot pruning, masks fixed.

Layer-wise methods (SparseGPT, Wanda) each minimise the error of one linear layer given its
inputs; the errors of the seven linears of a block then add up through the nonlinearities, and
those of earlier blocks compound. A few optimizer steps per block on the block's own output fix
much of that (the block-reconstruction step of BRECQ, Li et al., 2021, and of the LLM pruning
follow-ups): the *pruned* block, fed what the already pruned blocks produce, is fitted to what
the *dense* model's block produces at that depth on the same calibration sequences. Targets are
the dense model's hidden states, not the dense block applied to pruned inputs, so each block
also absorbs part of the error that reached it. Pruned weights stay exactly zero: their
gradients are masked and they are re-zeroed after every step
(:mod:`netslim.llm.fixed_masks`).

Adam keeps two full-size moments per weight and the backward pass a full-size gradient: three
copies of the block beside the block itself, which on the streaming path (one block in memory
at a time) is most of the peak. ``optimizer="adafactor"`` is the memory-light choice: torch's
Adafactor keeps factored second moments (a row and a column vector per matrix) and no first
moment, and each parameter is stepped from its gradient hook the moment its gradient is ready,
then the gradient is dropped, so at most one gradient is alive at a time. Its ``lr`` is a
*relative* step (scaled by each tensor's RMS), not Adam's absolute one. On the streaming path
Adam is stepped the same way, its moments in a scratch file (:mod:`netslim.llm.disk_adam`):
the same update, with the memory of Adafactor's path and the cost of the file's traffic.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from netslim.llm.calibration import BlockInputs
from netslim.llm.disk_adam import DiskAdam
from netslim.llm.fixed_masks import Masks, mask_grad, mask_grads, reapply
from netslim.llm.optim import adam, forward_precision


def _output(block: nn.Module, hidden: Tensor, inputs: BlockInputs) -> Tensor:
    out = block(hidden, *inputs.args, **inputs.kwargs)
    return out[0] if isinstance(out, tuple) else out


DEFAULT_LR = {"adam": 1.5e-3, "adafactor": 1e-2}
"""Each optimizer's learning rate when none is given, chosen by bench/llm.py on its development
text (Adafactor's is relative to each tensor's RMS, so the two are not comparable)."""
OPTIMIZERS = tuple(DEFAULT_LR)


def _stepper(
    params: list[nn.Parameter], masks: Masks, lr: float, optimizer: str, scratch: Path | None
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(step, close)``: ``step()`` runs after each backward pass; ``close()`` frees the state.

    In-memory Adam steps every parameter at once after the backward pass. Adafactor, and Adam
    with its moments in a file under ``scratch`` (:class:`~netslim.llm.disk_adam.DiskAdam`),
    step each parameter inside the backward pass (``register_post_accumulate_grad_hook``) and
    drop its gradient."""
    if optimizer == "adam" and scratch is None:
        opt = adam(params, lr)

        def step() -> None:
            mask_grads(masks)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step, lambda: opt.state.clear()

    if optimizer == "adam":
        disk = DiskAdam(params, lr, scratch)
        steppers = [functools.partial(disk.step, p) for p in params]
        release = disk.close
    else:
        per_param = [torch.optim.Adafactor([p], lr=lr, foreach=False) for p in params]
        steppers = [o.step for o in per_param]
        release = per_param.clear

    def hook(step_one: Callable[[], object]) -> Callable[[Tensor], None]:
        def run(p: Tensor) -> None:
            if p in masks:
                mask_grad(p, masks[p])
            step_one()
            p.grad = None

        return run

    handles = [
        p.register_post_accumulate_grad_hook(hook(s)) for p, s in zip(params, steppers, strict=True)
    ]

    def close() -> None:
        for h in handles:
            h.remove()
        release()

    return (lambda: None), close


def reconstruct_block(
    block: nn.Module,
    inputs: BlockInputs,
    target: Tensor,
    masks: Masks,
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int = 0,
    optimizer: str = "adam",
    scratch: Path | None = None,
    train_dtype: str = "float32",
) -> dict[str, float]:
    """Fit ``block(inputs.hidden)`` to ``target`` (both ``(N, L, D)``) with ``optimizer``
    (``adam`` | ``adafactor``, see the module doc) for ``steps`` steps of ``batch`` sequences;
    ``masks``: parameter → keep-mask (True = trainable), held fixed
    (:mod:`netslim.llm.fixed_masks`). ``scratch``: a folder for Adam's moments, kept there
    instead of in memory (the streaming path passes its output folder). ``train_dtype``: the
    forward passes' precision (:func:`~netslim.llm.optim.forward_precision`).

    Returns the loss of the first and of the last step and the seconds spent. The block's
    parameters keep their ``requires_grad`` flags as they were.
    """
    start = time.perf_counter()
    params = list(block.parameters())
    flags = [p.requires_grad for p in params]
    losses: list[float] = []
    gen = torch.Generator().manual_seed(seed)
    n = inputs.hidden.shape[0]
    order = torch.randperm(n, generator=gen)
    dtype = next(block.parameters()).dtype
    close: Callable[[], None] | None = None
    try:
        for p in params:
            p.requires_grad_(True)
        step, close = _stepper(params, masks, lr, optimizer, scratch)
        with torch.enable_grad():
            pos = 0
            for _ in range(steps):
                if pos + batch > n:
                    order, pos = torch.randperm(n, generator=gen), 0
                idx = order[pos : pos + batch]
                pos += batch
                with forward_precision(train_dtype, inputs.hidden.device):
                    out = _batched(block, inputs.hidden[idx].to(dtype), inputs)
                loss = torch.nn.functional.mse_loss(out.float(), target[idx])
                losses.append(float(loss.detach()))
                loss.backward()
                del out, loss
                step()
                reapply(masks)
    finally:
        if close is not None:
            close()
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
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
