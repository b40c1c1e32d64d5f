"""The prune job behind ``netslim prune`` and the demo: train → measure → prune → fine-tune →
measure → save → report. Each step calls the module that owns it; this file only orders them.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netslim.api import prune_
from netslim.errors import ConfigError
from netslim.io import save
from netslim.measure import measure
from netslim.models.spec import build_model, make_example_inputs

METHODS = ("unstructured", "channel")
SCHEDULES = ("oneshot", "iterative", "agp")


@dataclass
class JobSettings:
    """Every setting of a prune job; stored verbatim in report.json."""

    model: str
    method: str = "unstructured"
    ratio: float = 0.5
    scope: str = "global"
    criterion: str | None = None
    nm: str | None = None
    schedule: str = "oneshot"
    rounds: int = 3
    l1_reg: float = 0.0
    data: str | None = "fashion-mnist"
    epochs: int = 2
    finetune_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 128
    limit_train: int | None = None
    limit_test: int | None = None
    distill: bool = False
    target_macs: float | None = None
    round_to: int = 1
    ignore: list[str] = field(default_factory=list)
    example_shape: list[int] | None = None
    latency: bool = True
    progress: bool = True
    out: str = "runs/prune"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}"
            )
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"ratio must be in [0, 1), got {self.ratio}")
        for name in ("epochs", "finetune_epochs", "rounds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0")
        if self.l1_reg < 0:
            raise ConfigError(f"l1-reg must be >= 0, got {self.l1_reg}")


def parse_nm(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"--nm must look like 2:4, got {text!r}") from None
    return n, m


def build_config(settings: JobSettings, ratio: float | None = None) -> Any:
    """The method's config object for one pruning step (``ratio`` overrides for schedules)."""
    ratio = settings.ratio if ratio is None else ratio
    if settings.method == "unstructured":
        from netslim.unstructured.config import Unstructured

        return Unstructured(
            ratio=ratio,
            scope=settings.scope,
            criterion=settings.criterion or "l1",
            nm=parse_nm(settings.nm),
            ignore=tuple(settings.ignore),
            seed=settings.seed,
        )
    from netslim.structural.config import Channels

    return Channels(
        ratio=ratio,
        criterion=settings.criterion or "l2",
        target_macs=settings.target_macs,
        scope="global" if settings.scope == "global" else "local",
        ignore=tuple(settings.ignore),
        round_to=settings.round_to,
        seed=settings.seed,
    )


class _Trainer:
    """Binds data and settings to the training loop so schedules can call ``finetune(model)``."""

    def __init__(self, settings: JobSettings, train_loader: Any, teacher: nn.Module | None = None):
        self.settings = settings
        self.train_loader = train_loader
        self.teacher = teacher

    def fit(self, model: nn.Module, epochs: int, *, on_step=None, regularizer=None) -> None:
        from netslim.training import train

        if self.train_loader is None or epochs == 0:
            return
        train(
            model,
            self.train_loader,
            epochs=epochs,
            lr=self.settings.lr,
            regularizer=regularizer,
            teacher=self.teacher,
            on_step=on_step,
            progress=self.settings.progress,
        )

    def finetune(self, model: nn.Module) -> None:
        self.fit(model, self.settings.finetune_epochs)


def _apply_schedule(
    model: nn.Module, settings: JobSettings, trainer: _Trainer, example_inputs: tuple
) -> list[dict[str, Any]]:
    """Prune (and fine-tune) per the schedule; returns one summary per pruning step."""
    from netslim.schedules import iterative_ratios

    steps: list[dict[str, Any]] = []
    if settings.schedule == "oneshot":
        steps.append(prune_(model, build_config(settings), example_inputs=example_inputs))
        trainer.finetune(model)
    elif settings.schedule == "iterative":
        for ratio in iterative_ratios(settings.ratio, max(settings.rounds, 1)):
            steps.append(
                prune_(model, build_config(settings, ratio), example_inputs=example_inputs)
            )
            trainer.finetune(model)
    else:  # agp
        if settings.method != "unstructured":
            raise ConfigError("the agp schedule is available for --method unstructured")
        from netslim.schedules import AGPScheduler

        if trainer.train_loader is None or settings.finetune_epochs == 0:
            raise ConfigError(
                "the agp schedule prunes during training: give --data and --finetune-epochs"
            )
        total = len(trainer.train_loader) * settings.finetune_epochs
        scheduler = AGPScheduler(model, build_config(settings), total_steps=total)
        trainer.fit(model, settings.finetune_epochs, on_step=scheduler.on_step)
        steps.append({"schedule": "agp", "total_steps": total})
    return steps


def run_job(settings: JobSettings) -> dict[str, Any]:
    """Run a whole prune job and write ``report.json``, ``report.png`` and the model to ``out``."""
    from netslim.training import evaluate, seed_everything

    started = time.perf_counter()
    seed_everything(settings.seed)
    build_config(settings)  # validate the method settings before spending time on training
    model = build_model(settings.model)
    example_inputs = make_example_inputs(model, settings.example_shape)

    train_loader = test_loader = None
    if settings.data:
        from netslim.data import make_loaders

        train_loader, test_loader = make_loaders(
            settings.data,
            batch_size=settings.batch_size,
            limit_train=settings.limit_train,
            limit_test=settings.limit_test,
            seed=settings.seed,
        )

    trainer = _Trainer(settings, train_loader)
    regularizer = None
    if settings.l1_reg > 0:
        from netslim.regularization import L1Penalty

        regularizer = L1Penalty(settings.l1_reg)
    trainer.fit(model, settings.epochs, regularizer=regularizer)

    def snapshot(m: nn.Module) -> dict[str, Any]:
        return measure(
            m, example_inputs, loader=test_loader, evaluate=evaluate, latency=settings.latency
        )

    before = snapshot(model)
    if settings.distill:
        trainer.teacher = copy.deepcopy(model).eval()
    steps = _apply_schedule(model, settings, trainer, example_inputs)
    after = snapshot(model)

    report = _make_report(settings, before, after, steps, model)
    report["seconds"] = round(time.perf_counter() - started, 2)
    out = Path(settings.out)
    save(model, out / "model")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
    from netslim.report import write_plot

    write_plot(report, out / "report.png")
    return report


def _make_report(
    settings: JobSettings,
    before: dict[str, Any],
    after: dict[str, Any],
    steps: list[dict[str, Any]],
    model: nn.Module,
) -> dict[str, Any]:
    from netslim.unstructured.masks import sparsity_report

    report: dict[str, Any] = {"settings": asdict(settings)}
    for key in ("params", "nonzero_params", "macs", "latency_ms", "size_bytes", "accuracy"):
        report[f"{key}_before"] = before.get(key)
        report[f"{key}_after"] = after.get(key)
    report["sparsity"] = sparsity_report(model)
    report["steps"] = steps
    nm = parse_nm(settings.nm)
    if nm is not None:
        from netslim.unstructured.masks import iter_masks
        from netslim.unstructured.nm import check_nm

        report["nm_pattern_holds"] = all(
            check_nm(mask.float(), *nm) for mask in iter_masks(model).values()
        )
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)


# The main job (`netslim demo`, `make demo`): the reference CNN on Fashion-MNIST, about 10 minutes
# on 2 cores.
DEMO_ARGS = [
    "zoo:vgg_small",
    "--method",
    "unstructured",
    "--ratio",
    "0.9",
    "--epochs",
    "3",
    "--finetune-epochs",
    "2",
]
