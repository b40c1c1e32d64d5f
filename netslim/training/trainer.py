"""The training and evaluation loops shared by every schedule, fine-tune and demo.

Hooks rather than subclasses: a ``regularizer(model)`` term is added to the loss (L1, BN
slimming), ``on_step(step)`` runs after each optimizer step (AGP updates masks there) and a
``teacher`` turns on knowledge distillation. The loop only reads ``model.parameters()`` once and
never rebuilds them, so masks held in ``torch.nn.utils.parametrize`` parametrizations keep
working: the masked product is recomputed in every forward and its zeros get zero gradient.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netslim.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "none")

Regularizer = Callable[[nn.Module], Tensor]


@dataclass
class TrainResult:
    """What a call to :func:`train` did: mean objective per epoch, optimizer steps, wall time."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def train(
    model: nn.Module,
    train_loader: Iterable[Any],
    *,
    epochs: int,
    lr: float = 1e-3,
    optimizer: str = "adam",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    scheduler: str = "cosine",
    regularizer: Regularizer | None = None,
    teacher: nn.Module | None = None,
    kd_alpha: float = 0.5,
    kd_temperature: float = 4.0,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy (+ distillation, + ``regularizer(model)``).

    Batches are ``(inputs, labels)`` moved to the model's device. With a ``teacher`` the loss is
    ``(1 - kd_alpha) * CE + kd_alpha * T² * KL(teacher_T || student_T)`` on logits softened by
    ``T = kd_temperature``; the teacher runs in eval mode without gradients. ``on_step`` gets
    the number of optimizer steps done so far (1, 2, ...). ``max_steps`` stops early, and the
    cosine schedule then spans ``max_steps``. Every module's train/eval mode is restored at the end.
    """
    optimizer = optimizer.lower() if isinstance(optimizer, str) else optimizer
    scheduler = scheduler.lower() if isinstance(scheduler, str) else scheduler
    _validate(
        epochs,
        lr,
        optimizer,
        momentum,
        weight_decay,
        scheduler,
        kd_alpha,
        kd_temperature,
        max_steps,
    )
    for name, hook in (("regularizer", regularizer), ("on_step", on_step)):
        if hook is not None and not callable(hook):
            raise ConfigError(f"{name} must be callable, got {type(hook).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    opt = _make_optimizer(params, optimizer, lr, momentum, weight_decay)

    per_epoch = _length(train_loader)
    planned = epochs * per_epoch if per_epoch is not None else None
    if planned is not None and max_steps is not None:
        planned = min(planned, max_steps)
    sched = None
    if scheduler == "cosine":
        # Step-wise annealing when the length is known; otherwise one step per epoch.
        span = planned if planned is not None else epochs
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(span or 1, 1))

    device = _device_of(model)
    result = TrainResult()
    started = time.perf_counter()
    with _modes_restored(model), _modes_restored(teacher), _progress(progress, planned) as bar:
        model.train()
        if teacher is not None:
            teacher.eval()
        for epoch in range(epochs):
            if max_steps is not None and result.steps >= max_steps:
                break
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            total, batches = torch.zeros((), device=device), 0
            for batch in train_loader:
                inputs, labels = _unpack(batch, device)
                loss = _objective(
                    model, inputs, labels, regularizer, teacher, kd_alpha, kd_temperature
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None and planned is not None:
                    sched.step()
                result.steps += 1
                batches += 1
                total += loss.detach()
                if on_step is not None:
                    on_step(result.steps)
                bar.update(1)
                if batches % 20 == 1 and not isinstance(bar, _NoBar):
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if max_steps is not None and result.steps >= max_steps:
                    break
            if batches == 0:
                raise ConfigError("the training loader yielded no batches")
            if sched is not None and planned is None:
                sched.step()
            mean = float(total / batches)
            if not math.isfinite(mean):
                raise ConfigError(
                    f"training diverged (loss {mean}) in epoch {epoch + 1}; lower lr or the regularizer"
                )
            result.losses.append(mean)
    result.seconds = time.perf_counter() - started
    return result


def evaluate(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy in [0, 1] over ``loader``, in eval mode without gradients.

    The train/eval mode of every module is restored afterwards, so evaluating mid-training is safe.
    """
    device = _device_of(model)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with _modes_restored(model), torch.no_grad():
        model.eval()
        for batch in loader:
            inputs, labels = _unpack(batch, device)
            predictions = _logits(model(inputs)).argmax(dim=-1)
            correct += (predictions == labels).sum()
            seen += labels.numel()
    if seen == 0:
        raise ConfigError("the evaluation loader yielded no samples")
    return int(correct) / seen


def _validate(
    epochs: Any,
    lr: Any,
    optimizer: Any,
    momentum: Any,
    weight_decay: Any,
    scheduler: Any,
    kd_alpha: Any,
    kd_temperature: Any,
    max_steps: Any,
) -> None:
    def number(value: Any) -> bool:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    checks = [
        (count(epochs), f"epochs must be an integer >= 0, got {epochs!r}"),
        (number(lr) and lr > 0, f"lr must be a positive number, got {lr!r}"),
        (
            optimizer in OPTIMIZERS,
            f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}",
        ),
        (
            scheduler in SCHEDULERS,
            f"unknown scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)}",
        ),
        (number(momentum) and 0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum!r}"),
        (
            number(weight_decay) and weight_decay >= 0,
            f"weight_decay must be >= 0, got {weight_decay!r}",
        ),
        (number(kd_alpha) and 0 <= kd_alpha <= 1, f"kd_alpha must be in [0, 1], got {kd_alpha!r}"),
        (
            number(kd_temperature) and kd_temperature > 0,
            f"kd_temperature must be > 0, got {kd_temperature!r}",
        ),
        (
            max_steps is None or count(max_steps),
            f"max_steps must be an integer >= 0 or None, got {max_steps!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _make_optimizer(
    params: list[nn.Parameter], name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _objective(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    regularizer: Regularizer | None,
    teacher: nn.Module | None,
    kd_alpha: float,
    kd_temperature: float,
) -> Tensor:
    logits = _logits(model(inputs))
    loss = F.cross_entropy(logits, labels)
    if teacher is not None:
        with torch.no_grad():
            target = _logits(teacher(inputs.to(_device_of(teacher)))).to(logits.device)
        t = kd_temperature
        kd = F.kl_div(
            F.log_softmax(logits / t, dim=-1),
            F.log_softmax(target / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        loss = (1.0 - kd_alpha) * loss + kd_alpha * (t * t) * kd
    if regularizer is not None:
        loss = loss + torch.as_tensor(regularizer(model), device=loss.device)
    return loss


def _logits(output: Any) -> Tensor:
    """Classifier logits from a plain tensor, an object with ``.logits`` (Hugging Face) or a tuple."""
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ConfigError(f"cannot find logits in a model output of type {type(output).__name__}")


def _unpack(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ConfigError(f"expected (inputs, labels) batches, got {type(batch).__name__}")
    return batch[0].to(device), batch[1].to(device)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


@contextlib.contextmanager
def _modes_restored(model: nn.Module | None) -> Iterator[None]:
    """Restore each module's own train/eval flag (a frozen BN in eval mode stays in eval mode)."""
    modes = [(m, m.training) for m in model.modules()] if model is not None else []
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class _NoBar:
    def update(self, n: int = 1) -> None: ...

    def set_description(self, desc: str) -> None: ...

    def set_postfix(self, **kwargs: Any) -> None: ...


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None) -> Iterator[Any]:
    """A tqdm bar on an interactive terminal; silent in logs, tests and without tqdm installed."""
    if not enabled or not sys.stderr.isatty():
        yield _NoBar()
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _NoBar()
        return
    bar = tqdm(total=total, leave=False, unit="step", dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
