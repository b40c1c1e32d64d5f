"""Statistics collected over a calibration set, keyed by parameter or module name.

Every function leaves the model's weights, gradients and train/eval mode as it found them, and
sums its statistics over ranks under ``torchrun`` so every rank ranks on the same sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from netslim.core.masks import canonical_name
from netslim.distributed.sync import all_reduce_scores_
from netslim.importance.calibration import Calibration, forward, iter_batches, loss_of

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.train(train)
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def gradient_stats(
    model: nn.Module, calibration: Calibration, criterion: str
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(taylor, fisher)`` per parameter: ``|Σ_b w·g_b|`` and ``mean_b g_b²`` over batches.

    Gradients are taken in eval mode (BatchNorm uses its running statistics, dropout is off), so
    scoring does not change the running statistics. Existing ``.grad`` values are restored.
    """
    params = {canonical_name(n): p for n, p in model.named_parameters() if p.requires_grad}
    saved = {n: p.grad for n, p in params.items()}
    wg = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    g2 = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    try:
        with _mode(model, False), torch.enable_grad():
            for batch in iter_batches(model, calibration):
                for p in params.values():
                    p.grad = None
                loss_of(model, batch, calibration, criterion).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        g = p.grad.detach().float()
                        wg[n] += p.detach().float() * g
                        g2[n] += g * g
                count += 1
    finally:
        for n, p in params.items():
            p.grad = saved[n]
    fisher = {n: v / count for n, v in g2.items()}
    all_reduce_scores_(wg, "mean")
    all_reduce_scores_(fisher, "mean")
    return {n: v.abs() for n, v in wg.items()}, fisher


def _channel_dim(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


def input_norms(model: nn.Module, calibration: Calibration) -> dict[str, Tensor]:
    """‖X_j‖₂ per input feature/channel of every Linear/Conv, over all samples and positions."""
    sq: dict[str, Tensor] = {}

    def hook(name: str, module: nn.Module):
        def fn(_m: nn.Module, args: tuple, _out: object) -> None:
            x = args[0].detach().float()
            x = x.movedim(_channel_dim(module), 0).reshape(x.shape[_channel_dim(module)], -1)
            s = (x * x).sum(1)
            sq[name] = sq[name] + s if name in sq else s

        return fn

    _calibrate_with_hooks(model, calibration, LAYERS, hook)
    all_reduce_scores_(sq, "sum")
    return {n: v.sqrt() for n, v in sq.items()}


def _calibrate_with_hooks(
    model: nn.Module, calibration: Calibration, types: tuple[type, ...], make_hook
) -> None:
    """Run the calibration batches (eval mode, no grad) with ``make_hook(name, module)`` as a
    forward hook on every module of ``types``; the hooks are removed whatever happens."""
    handles = [
        m.register_forward_hook(make_hook(name, m))
        for name, m in model.named_modules()
        if isinstance(m, types)
    ]
    try:
        with _mode(model, False), torch.no_grad():
            for batch in iter_batches(model, calibration):
                forward(model, batch)
    finally:
        for h in handles:
            h.remove()


def activation_stats(
    model: nn.Module, calibration: Calibration
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(apoz, mean)`` per output channel of every Linear/Conv/BatchNorm, on ``relu(output)``:
    the fraction of zeros and the mean activation over samples and positions."""
    zeros: dict[str, Tensor] = {}
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}

    def hook(name: str, module: nn.Module):
        def fn(_m: nn.Module, _args: tuple, out: object) -> None:
            if not isinstance(out, Tensor):
                return
            d = _channel_dim(module)
            y = out.detach().float().relu()
            y = y.movedim(d, 0).reshape(y.shape[d], -1)
            z, s = (y == 0).float().sum(1), y.sum(1)
            n = torch.full_like(s, y.shape[1])
            zeros[name] = zeros[name] + z if name in zeros else z
            sums[name] = sums[name] + s if name in sums else s
            counts[name] = counts[name] + n if name in counts else n

        return fn

    _calibrate_with_hooks(model, calibration, LAYERS + NORMS, hook)
    for d in (zeros, sums, counts):
        all_reduce_scores_(d, "sum")
    apoz = {n: zeros[n] / counts[n] for n in zeros}
    mean = {n: sums[n] / counts[n] for n in sums}
    return apoz, mean
