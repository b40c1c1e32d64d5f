"""The training and evaluation loops shared by every schedule, fine-tune and demo.

Hooks rather than subclasses: a ``regularizer(model)`` term is added to the loss (L1, BN
slimming), or, for a penalty with a proximal step ``prox_(model, tau)`` (group lasso), applied
after each optimizer step with ``tau = lr * lam`` so whole units reach exactly zero; ``on_step(step)`` runs after each optimizer step (AGP updates masks there) and a
``teacher`` turns on knowledge distillation. The loop only reads ``model.parameters()`` once and
never rebuilds them, so masks held in ``torch.nn.utils.parametrize`` parametrizations keep
working: the masked product is recomputed in every forward and its zeros get zero gradient.

Under ``torchrun`` (a process group is initialised) the loop wraps the model in
DistributedDataParallel for its own use, calls ``set_epoch`` on the loader's sampler, and rebuilds
the wrapper and shrinks the optimizer state when a hook replaced parameters (structural pruning
mid-training, announced with ``netslim.training.optim_state.note_replacements``). A
``checkpoint`` (:class:`netslim.training.checkpoint.RunCheckpoint`) makes the loop save every few
steps and, when resuming, continue from the saved step exactly.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netslim.core.batches import Loss, device_of, logits_of, to_device
from netslim.distributed.ddp import rewrap, wrap
from netslim.distributed.env import is_main, log, world_size
from netslim.distributed.sync import broadcast_buffers_, verify_consistent
from netslim.errors import ConfigError, PruningError
from netslim.training.optim_state import shrink_optimizer_state, take_replacements

if TYPE_CHECKING:
    from netslim.training.checkpoint import RunCheckpoint

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "linear", "none")

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
    checkpoint: RunCheckpoint | None = None,
    loss: Loss | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy (+ distillation, + ``regularizer(model)``).

    Batches are ``(inputs, labels)`` moved to the model's device. With a ``teacher`` the loss is
    ``(1 - kd_alpha) * CE + kd_alpha * T² * KL(teacher_T || student_T)`` on logits softened by
    ``T = kd_temperature``; the teacher runs in eval mode without gradients. With ``loss``
    (``fn(model, batch) -> scalar``, as ``prune_(..., loss=fn)`` takes it) that loss replaces
    cross-entropy, and batches may be anything it reads (dicts of keyword inputs, unlabelled
    tensors), moved to the model's device; distillation then belongs in that loss.
    ``on_step`` gets the number of optimizer steps done so far (1, 2, ...). ``max_steps`` stops early, and the
    learning-rate schedule (``cosine`` or ``linear`` decay to 0) then spans ``max_steps``.
    Every module's train/eval mode is restored at the end. With a ``checkpoint`` the state is
    saved every ``checkpoint.every`` steps, and a resumed checkpoint's weights, optimizer, LR
    schedule, RNG and data position are restored first.
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
    for name, hook in (("regularizer", regularizer), ("on_step", on_step), ("loss", loss)):
        if hook is not None and not callable(hook):
            raise ConfigError(f"{name} must be callable, got {type(hook).__name__}")
    if loss is not None and teacher is not None:
        raise ConfigError(
            "teacher= distils with cross-entropy on logits; with your own loss= add the "
            "distillation term to that loss"
        )
    # A penalty with a proximal step (group lasso) is applied after each optimizer step instead
    # of through the loss: its subgradient only shrinks units, the prox sets them exactly to 0.
    proximal = regularizer if callable(getattr(regularizer, "prox_", None)) else None
    in_loss = None if proximal is not None else regularizer
    resume = checkpoint.begin_training() if checkpoint is not None else None
    if resume is not None:
        _load_weights(model, resume["model_state"])
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    opt = _make_optimizer(params, optimizer, lr, momentum, weight_decay)

    per_epoch = _length(train_loader)
    planned = epochs * per_epoch if per_epoch is not None else None
    if planned is not None and max_steps is not None:
        planned = min(planned, max_steps)
    sched = None
    if scheduler != "none":
        # Step-wise decay to 0 when the length is known; otherwise one step per epoch.
        span = max(planned if planned is not None else epochs, 1)
        sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=span)
            if scheduler == "cosine"
            else torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=span)
        )

    result = TrainResult()
    position = {"epoch": 0, "batch": 0, "epoch_total": 0.0}
    if resume is not None:
        position = _restore(resume, model, opt, sched, result)
    _check_sampler(train_loader)

    device = device_of(model)
    net = wrap(model)
    signature = _signature(model)
    started = time.perf_counter()
    show = progress and is_main()
    epoch_log = _EpochLog(model) if show and not sys.stderr.isatty() else None
    with (
        _modes_restored(model),
        _modes_restored(teacher),
        _progress(show, planned) as bar,
        epoch_log or contextlib.nullcontext(),
    ):
        model.train()
        if teacher is not None:
            teacher.eval()
        for epoch in range(position["epoch"], epochs):
            resumed_epoch = epoch == position["epoch"] and position["batch"] > 0
            if not resumed_epoch and max_steps is not None and result.steps >= max_steps:
                break
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            total = torch.zeros((), device=device)
            batches = 0
            if resumed_epoch:
                total += position["epoch_total"]
                batches = position["batch"]
            for batch in _epoch_batches(train_loader, epoch, batches if resumed_epoch else 0):
                if max_steps is not None and result.steps >= max_steps:
                    break
                if loss is not None:
                    step_loss = _own_objective(net, model, to_device(batch, device), loss, in_loss)
                else:
                    inputs, labels = _unpack(batch, device)
                    if epoch_log is not None:
                        epoch_log.labels = labels
                    step_loss = _objective(
                        net, model, inputs, labels, in_loss, teacher, kd_alpha, kd_temperature
                    )
                opt.zero_grad(set_to_none=True)
                step_loss.backward()
                opt.step()
                if proximal is not None:
                    proximal.prox_(model, opt.param_groups[0]["lr"] * proximal.lam)
                if sched is not None and planned is not None:
                    sched.step()
                result.steps += 1
                batches += 1
                total += step_loss.detach()
                if on_step is not None:
                    on_step(result.steps)
                    net, signature = _after_hook(model, net, opt, signature)
                if checkpoint is not None and checkpoint.due(result.steps):
                    here = {"epoch": epoch, "batch": batches, "epoch_total": float(total)}
                    checkpoint.save(
                        model,
                        optimizer=opt,
                        lr_scheduler=sched,
                        position={**here, "steps": result.steps, "losses": result.losses},
                        teacher=teacher,
                    )
                bar.update(1)
                if batches % 20 == 1 and not isinstance(bar, _NoBar):
                    bar.set_postfix(loss=f"{step_loss.item():.4f}")
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
            if epoch_log is not None:
                epoch_log.line(epoch, epochs, mean)
    del net
    broadcast_buffers_(model)  # each rank's last step left BN statistics of its own batch
    result.seconds = time.perf_counter() - started
    return result


def evaluate(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy in [0, 1] over ``loader``, in eval mode without gradients.

    The train/eval mode of every module is restored afterwards, so evaluating mid-training is safe.
    """
    device = device_of(model)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with _modes_restored(model), torch.no_grad():
        model.eval()
        for batch in loader:
            inputs, labels = _unpack(batch, device)
            predictions = logits_of(model(inputs)).argmax(dim=-1)
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
    net: nn.Module,
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    regularizer: Regularizer | None,
    teacher: nn.Module | None,
    kd_alpha: float,
    kd_temperature: float,
) -> Tensor:
    logits = logits_of(net(inputs))  # through the DDP wrapper when distributed
    loss = F.cross_entropy(logits, labels)
    if teacher is not None:
        with torch.no_grad():
            target = logits_of(teacher(inputs.to(device_of(teacher)))).to(logits.device)
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


def _own_objective(
    net: nn.Module, model: nn.Module, batch: Any, loss: Loss, regularizer: Regularizer | None
) -> Tensor:
    """The user's ``loss(model, batch)`` (+ the regularizer), checked to be a scalar tensor."""
    value = loss(net, batch)  # through the DDP wrapper when distributed
    if not isinstance(value, Tensor) or value.numel() != 1 or not value.requires_grad:
        raise ConfigError(
            "loss(model, batch) must return a scalar tensor that depends on the model's "
            f"parameters, got {type(value).__name__}"
            + (f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else "")
        )
    if regularizer is not None:
        value = value + torch.as_tensor(regularizer(model), device=value.device)
    return value.reshape(())


def _load_weights(model: nn.Module, state: dict[str, Tensor]) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"the checkpoint's weights do not fit this model: {exc}") from exc


def _restore(
    resume: dict[str, Any],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    result: TrainResult,
) -> dict[str, Any]:
    """Put optimizer, LR schedule, RNG and counters back as they were after the saved step."""
    from netslim.training.checkpoint import load_optimizer_state, restore_rng

    if resume.get("optimizer") is not None:
        load_optimizer_state(opt, model, resume["optimizer"], resume["tensors"])
    if sched is not None and resume.get("lr_scheduler") is not None:
        sched.load_state_dict(resume["lr_scheduler"])
    restore_rng(resume["rng"], resume["tensors"])
    position = resume["position"]
    result.steps = int(position["steps"])
    result.losses = [float(x) for x in position["losses"]]
    return position


def _epoch_batches(loader: Iterable[Any], epoch: int, skip: int) -> Iterator[Any]:
    """The batches of ``epoch``, without the first ``skip`` (already trained before a resume)."""
    sampler = getattr(loader, "sampler", None)
    batch_size = getattr(loader, "batch_size", None)
    if skip and hasattr(sampler, "set_position") and batch_size:
        sampler.set_position(epoch, min(skip * batch_size, sampler.num_samples))
        yield from loader
        return
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    for index, batch in enumerate(loader):
        if index >= skip:  # a loader we cannot fast-forward: draw and drop
            yield batch


def _check_sampler(loader: Iterable[Any]) -> None:
    from torch.utils.data import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if world_size() > 1 and not isinstance(sampler, DistributedSampler) and is_main():
        log(
            "warning: the training loader has no DistributedSampler, so every rank trains "
            "on the same batches; netslim.data.make_loaders shards them"
        )


def _signature(model: nn.Module) -> list[tuple[str, int, tuple[int, ...]]]:
    return sorted((name, id(p), tuple(p.shape)) for name, p in model.named_parameters())


def _after_hook(
    model: nn.Module, net: nn.Module, opt: torch.optim.Optimizer, signature: list
) -> tuple[nn.Module, list]:
    """Follow what an ``on_step`` hook did to the parameters.

    Swapped parameters (announced with ``note_replacements``) move the optimizer state over;
    any change, including a first mask (parametrize re-registers the weight under a new name and
    DDP's gradient hooks stop firing for it), needs a fresh DDP wrapper.
    """
    replaced = take_replacements(model)
    now = _signature(model)
    if now == signature and not replaced:
        return net, signature
    if replaced:
        shrink_optimizer_state(opt, replaced)
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if held != trainable:
        raise PruningError(
            "on_step replaced or reshaped parameters without announcing it; call "
            "netslim.training.optim_state.note_replacements(model, ...) so the optimizer "
            "state can follow"
        )
    verify_consistent(model, what="change of parameters during training")
    if net is model:
        return net, now
    del net  # the old wrapper's buckets and hooks describe the old parameters
    return rewrap(model), now


def _unpack(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ConfigError(f"expected (inputs, labels) batches, got {type(batch).__name__}")
    return batch[0].to(device), batch[1].to(device)


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


class _EpochLog:
    """Outside a terminal (a log file, CI): one line per epoch with the mean loss, the accuracy
    on the training batches (read from the model's own outputs by a forward hook) and the time."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.labels: Tensor | None = None
        self.correct = self.seen = 0
        self.started = time.perf_counter()

    def __enter__(self) -> _EpochLog:
        self.handle = self.model.register_forward_hook(self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def _count(self, module: nn.Module, args: Any, output: Any) -> None:
        logits = getattr(output, "logits", output)
        labels = self.labels
        if (
            isinstance(logits, Tensor)
            and labels is not None
            and logits.dim() == 2
            and labels.dim() == 1
            and logits.shape[0] == labels.shape[0]
        ):
            self.correct += int((logits.detach().argmax(-1) == labels).sum())
            self.seen += labels.numel()
        self.labels = None  # one count per batch (a teacher or a second forward is not counted)

    def line(self, epoch: int, epochs: int, loss: float) -> None:
        accuracy = f", train accuracy {self.correct / self.seen:.2%}" if self.seen else ""
        seconds = time.perf_counter() - self.started
        print(
            f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}{accuracy}, {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        self.correct = self.seen = 0
        self.started = time.perf_counter()


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
