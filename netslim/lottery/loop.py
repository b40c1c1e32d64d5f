"""One training phase of a round: steps ``start..T`` of a fixed-length run, with validation.

IMP needs more than ``netslim.training.train`` gives: an exact number of optimizer steps that
may span epochs, the learning-rate schedule *positioned at step k* (late and learning-rate
rewinding replay the schedule from k), a copy of the weights at step k of the dense run, and
the validation curve that yields the early-stopping iteration. Each phase seeds its own data
order and RNGs from (seed, phase name), so a resumed search retrains exactly like an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netslim.core.batches import device_of
from netslim.errors import ConfigError
from netslim.lottery.config import Lottery
from netslim.training import evaluate, logits_of, seed_everything


@dataclass
class PhaseResult:
    """The validation curve, where it peaked, and test accuracy at the end and at that peak."""

    curve: list[list[float | int]] = field(default_factory=list)  # [iteration, val accuracy]
    test_acc: float | None = None
    test_acc_at_reach: float | None = None
    steps: int = 0
    seconds: float = 0.0

    @property
    def best(self) -> list[float | int] | None:
        """The first curve point with the highest validation accuracy."""
        return max(self.curve, key=lambda row: (row[1], -row[0])) if self.curve else None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: final/best validation, reach iteration, test accuracies, the curve."""
        best = self.best
        return {
            "test_acc": self.test_acc,
            "val_acc": self.curve[-1][1] if self.curve else None,
            "best_val_acc": best[1] if best else None,
            "reach_iter": best[0] if best else None,
            "test_acc_at_reach": self.test_acc_at_reach,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "curve": self.curve,
        }


class _Tracker:
    """Validation every few steps; keeps a copy of the weights at the best point so the test
    set is evaluated only twice (end, early-stop point) instead of at every point. Without a
    validation set the test set stands in (and the reach iteration is then optimistic)."""

    def __init__(self, model: nn.Module, val_loader: Any, test_loader: Any):
        self.model, self.val, self.test = model, val_loader, test_loader
        self.result = PhaseResult()
        self.best_state: dict[str, Tensor] | None = None

    def point(self, step: int) -> None:
        loader = self.val if self.val is not None else self.test
        if loader is None:
            return
        previous = self.result.best
        accuracy = evaluate(self.model, loader)
        self.result.curve.append([step, accuracy])
        if self.test is not None and (previous is None or accuracy > previous[1]):
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def finish(self) -> PhaseResult:
        result = self.result
        if self.test is not None:
            result.test_acc = evaluate(self.model, self.test)
            if self.best_state is not None and result.best is not result.curve[-1]:
                final = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.model.load_state_dict(self.best_state)
                result.test_acc_at_reach = evaluate(self.model, self.test)
                self.model.load_state_dict(final)
            else:
                result.test_acc_at_reach = result.test_acc
        return result


def phase_seed(seed: int, phase: str) -> int:
    return zlib.crc32(f"{seed}:{phase}".encode()) & 0x7FFFFFFF


def rewind_state(model: nn.Module) -> dict[str, Tensor]:
    """Copy of every parameter and buffer except masks: what rewinding restores."""
    return {
        key: value.detach().clone()
        for key, value in model.state_dict().items()
        if not is_mask_key(key)
    }


def is_mask_key(key: str) -> bool:
    """Whether a state-dict key is a netslim mask buffer (masks are not rewound)."""
    return ".parametrizations." in f".{key}" and key.endswith(".mask")


def learning_rate(config: Lottery, step: int, total: int) -> float:
    """The schedule's lr for the step after ``step`` steps (cosine anneals to 0 at T)."""
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * step / total))
    return config.lr


def _optimizer(model: nn.Module, config: Lottery) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _batches(loader: Iterable[Any]) -> Iterable[Any]:
    """Endless passes over ``loader``; fails clearly on an empty one."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the training loader yielded no batches")


def train_phase(
    model: nn.Module,
    loader: Iterable[Any],
    config: Lottery,
    *,
    phase: str,
    start: int,
    total: int,
    val_loader: Iterable[Any] | None,
    test_loader: Iterable[Any] | None,
    capture_at: int | None = None,
) -> tuple[PhaseResult, dict[str, Tensor] | None]:
    """Train steps ``start+1..total`` (cross-entropy); returns the curve and, if ``capture_at``
    is in ``[start, total]``, a :func:`rewind_state` copy taken after that many steps."""
    seed = phase_seed(config.seed, phase)
    seed_everything(seed)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)
    every = config.eval_every or max(1, total // 10)
    device = device_of(model)
    optimizer = _optimizer(model, config)
    tracker = _Tracker(model, val_loader, test_loader)
    captured = rewind_state(model) if capture_at == start else None
    started = time.perf_counter()
    was_training = model.training
    model.train()
    try:
        step = start
        batches = iter(_batches(loader))
        while step < total:
            inputs, labels = (t.to(device) for t in next(batches)[:2])
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step, total)
            loss = F.cross_entropy(logits_of(model(inputs)), labels)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged (loss {float(loss)}) in {phase}; lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == capture_at:
                captured = rewind_state(model)
            if step % every == 0 or step == total:
                tracker.point(step)
    finally:
        model.train(was_training)
    result = tracker.finish()
    result.steps = total - start
    result.seconds = time.perf_counter() - started
    return result, captured
