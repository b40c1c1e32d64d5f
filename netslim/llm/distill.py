"""Recovery after width or depth pruning: distil the dense model into the pruned one.

Structural pruning removes whole neurons, heads or blocks; no one-shot refit brings back what
they computed, but a few hundred steps of knowledge distillation do much of it (Sheared-LLaMA,
Minitron): the pruned student is trained to match the dense teacher's next-token distribution,
``KL(p_teacher ‖ p_student)`` per token, on calibration text. Batches arrive from an iterator,
so the text can be streamed and never needs to be in memory whole; the teacher's logits are
computed per batch and dropped. The embeddings (tied to the output head in most small LMs)
stay frozen, the blocks and the final norm train; shapes never change, so the result still
reloads with stock ``AutoModelForCausalLM.from_pretrained``.

The same distillation recovers per-weight (unstructured, N:M) pruning with its masks fixed:
the sparsity pattern, 2:4 included, never changes (:mod:`netslim.llm.fixed_masks`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from netslim.llm.arch import layers
from netslim.llm.fixed_masks import Masks, mask_grads, reapply
from netslim.llm.optim import adam, forward_precision


def cycle_batches(ids: Tensor, batch: int, seed: int = 0) -> Iterator[Tensor]:
    """Endless ``(batch, seq_len)`` batches from the rows of ``ids``, one shuffled pass after
    another (deterministic for a given seed)."""
    gen = torch.Generator().manual_seed(seed)
    n = ids.shape[0]
    batch = min(batch, n)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch + 1, batch):
            yield ids[order[start : start + batch]]


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters distillation updates: every block's and the final norm's (what is not
    an embedding or the output head)."""
    skip = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        skip.add(id(head.weight))
    out, seen = [], set()
    for p in model.parameters():
        if id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def kd_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean over tokens of ``KL(softmax(teacher) ‖ softmax(student))``."""
    s = torch.log_softmax(student_logits.float(), dim=-1)
    t = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterable[Tensor],
    *,
    steps: int,
    lr: float,
    warmup: int = 10,
    clip: float = 1.0,
    masks: Masks | None = None,
    train_dtype: str = "float32",
) -> dict[str, Any]:
    """Train ``student`` toward ``teacher`` for ``steps`` batches of token ids; AdamW with a
    linear warm-up then linear decay to 0 from the peak ``lr`` (no default here: the one
    default is ``LLMPrune.recover_lr``). ``masks``: parameter → keep-mask (True = may
    change); masked-out entries stay exactly as they are. ``train_dtype``: the teacher's and
    the student's forward precision (:func:`~netslim.llm.optim.forward_precision`). Returns the
    losses and the seconds spent."""
    masks = masks or {}
    start = time.perf_counter()
    params = trainable(student)
    flags = {id(p): p.requires_grad for p in student.parameters()}
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = adam(params, lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / max(warmup, 1), max(0.0, (steps - i) / max(steps - warmup, 1)))
    )
    losses: list[float] = []
    tokens = 0
    teacher.eval()
    student.eval()  # no dropout: the student should match the teacher's deterministic function
    try:
        it = iter(batches)
        for _ in range(steps):
            ids = next(it)
            device = ids.device
            with torch.no_grad(), forward_precision(train_dtype, device):
                target = teacher(input_ids=ids, use_cache=False).logits
            with torch.enable_grad():
                with forward_precision(train_dtype, device):
                    logits = student(input_ids=ids, use_cache=False).logits
                loss = kd_loss(logits, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            mask_grads(masks)
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            reapply(masks)
            sched.step()
            losses.append(float(loss.detach()))
            tokens += ids.numel()
            del target, loss
    finally:
        for p in student.parameters():
            p.requires_grad_(flags[id(p)])
            p.grad = None
    window = max(1, min(10, len(losses)))
    return {
        "steps": steps,
        "tokens": tokens,
        "lr": lr,
        "loss_first": sum(losses[:window]) / window if losses else 0.0,
        "loss_last": sum(losses[-window:]) / window if losses else 0.0,
        "trained_params": sum(p.numel() for p in params),
        "blocks": len(layers(student)),
        "seconds": time.perf_counter() - start,
    }
