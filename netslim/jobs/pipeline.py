"""The prune job behind ``netslim prune`` and the demo: train → measure → prune → fine-tune →
measure → save → report. Each step calls the module that owns it; this file only orders them.

Each step is a checkpoint *stage* (``netslim.training.checkpoint``): with ``checkpoint_every``
the training stages save every N steps, and ``resume`` skips the finished stages and continues
the interrupted one. Under ``torchrun`` every rank runs the job; rank 0 writes every file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from netslim.core.copying import copy_model
from netslim.core.masks import folded_copy, iter_masks
from netslim.errors import ConfigError
from netslim.io import save
from netslim.jobs.preflight import check_inputs, check_out, check_training_settings
from netslim.jobs.prune_report import (
    data_summary,
    json_default,
    make_report,
    masks_summary,
    noted_warnings,
    result_warnings,
    training_budget,
)
from netslim.jobs.settings import JobSettings, build_config, extra_epochs, fingerprint, resolve_data
from netslim.measure import measure
from netslim.models.spec import make_example_inputs

LATENCY_BATCH = 64  # the report times batch 1 and a batch of this size


def _regularizer(settings: JobSettings, model: nn.Module, example_inputs: tuple) -> Any:
    """L1 on weights, or for slimming L1 on BN scales (group lasso when there is no BN)."""
    if settings.l1_reg <= 0:
        return None
    if settings.method != "slimming":
        from netslim.regularization import L1Penalty

        return L1Penalty(settings.l1_reg)
    from netslim.regularization import BNScalePenalty, GroupLassoPenalty
    from netslim.regularization.bn import BATCHNORMS

    if any(isinstance(m, BATCHNORMS) for m in model.modules()):
        return BNScalePenalty(settings.l1_reg, warmup=settings.l1_warmup)
    return GroupLassoPenalty(settings.l1_reg, model, example_inputs, ignore=settings.ignore)


def _slimming_criterion(settings: JobSettings, model: nn.Module) -> JobSettings:
    """Slimming ranks BN scales; a model without BN falls back to the group norm (after lasso)."""
    from netslim.regularization.bn import BATCHNORMS

    has_bn = any(isinstance(m, BATCHNORMS) for m in model.modules())
    if settings.method == "slimming" and settings.criterion is None and not has_bn:
        return replace(settings, criterion="l2")
    return settings


class _Trainer:
    """Binds data, settings and checkpoints to the training loop so schedules can call
    ``finetune(model)``. Training runs on this rank's device (its GPU under NCCL) and the model
    goes back to the CPU afterwards, where measuring and saving happen."""

    def __init__(
        self,
        settings: JobSettings,
        train_loader: Any,
        teacher: nn.Module | None = None,
        checkpoint: Any = None,
        test_loader: Any = None,
    ):
        self.settings = settings
        self.train_loader = train_loader
        self.test_loader = test_loader  # accuracy right after each pruning step
        self.teacher = teacher
        self.checkpoint = checkpoint

    def fit(
        self, model: nn.Module, epochs: int, *, on_step=None, regularizer=None
    ) -> list[float] | None:
        from netslim.distributed import device
        from netslim.training import train
        from netslim.training.checkpoint import RunCheckpoint

        if self.train_loader is None or epochs == 0:
            return None
        here = device()
        model.to(here)
        if self.teacher is not None:
            self.teacher.to(here)
        try:
            result = train(
                model,
                self.train_loader,
                epochs=epochs,
                lr=self.settings.lr,
                regularizer=regularizer,
                teacher=self.teacher,
                on_step=on_step,
                progress=self.settings.progress,
                checkpoint=self.checkpoint if isinstance(self.checkpoint, RunCheckpoint) else None,
            )
        finally:
            model.cpu()
            if self.teacher is not None:
                self.teacher.cpu()
        return result.losses

    def finetune(self, model: nn.Module) -> list[float] | None:
        return self.fit(model, self.settings.finetune_epochs)


def _apply_schedule(
    model: nn.Module, settings: JobSettings, trainer: _Trainer, example_inputs: tuple, ckpt: Any
) -> list[dict[str, Any]]:
    """Prune (and fine-tune) per the schedule; returns one summary per pruning step.

    Every pruning step runs on every rank with rank 0's decision and is verified to agree.
    """
    from netslim.api import prune_step_
    from netslim.schedules import iterative_ratios

    time_steps = _time_targets(model, settings, example_inputs)

    def prune_step(ratio: float | None = None, index: int = 0) -> dict[str, Any]:
        step = settings
        if time_steps:  # a time target per iterative round
            speedup = _round_speedup(time_steps, index, steps[:index])
            step = replace(settings, target_latency_ms=None, target_speedup=speedup)
        notes: list[str] = []
        with noted_warnings(notes):
            summary = prune_step_(
                model,
                step,
                settings.ratio if ratio is None else ratio,
                example_inputs=example_inputs,
                train_loader=trainer.train_loader,
            )
        if notes:  # the report lists them with the other results to look at twice
            summary["warnings"] = notes
        if trainer.test_loader is not None:  # shown beside the fine-tuned accuracy
            from netslim.training import evaluate

            summary["accuracy_after_prune"] = evaluate(model, trainer.test_loader)
        return summary

    steps: list[dict[str, Any]] = []
    if settings.schedule == "oneshot":
        steps.append(ckpt.stage("prune", prune_step))
        ckpt.stage("finetune", lambda: trainer.finetune(model))
    elif settings.schedule == "iterative":
        for index, ratio in enumerate(iterative_ratios(settings.ratio, max(settings.rounds, 1))):
            steps.append(ckpt.stage(f"prune:{index}", lambda r=ratio, i=index: prune_step(r, i)))
            ckpt.stage(f"finetune:{index}", lambda: trainer.finetune(model))
    else:  # agp
        if settings.method != "unstructured":
            raise ConfigError("the agp schedule is available for --method unstructured")
        if trainer.train_loader is None or settings.finetune_epochs == 0:
            raise ConfigError(
                "the agp schedule prunes during training: give --data and --finetune-epochs"
            )
        total = len(trainer.train_loader) * settings.finetune_epochs
        steps.append(ckpt.stage("agp", lambda: _run_agp(model, settings, trainer, total, ckpt)))
    return steps


def _time_targets(model: nn.Module, settings: JobSettings, example_inputs: tuple) -> list[float]:
    """Per-round shares of an iterative schedule's time target: the same factor each round
    (geometric), whose product is the target (``_round_speedup`` turns them into each round's
    aim from what the earlier rounds measured); [] when there is none."""
    if settings.schedule != "iterative" or settings.method not in ("channel", "slimming"):
        return []
    if settings.target_speedup is None and settings.target_latency_ms is None:
        return []
    rounds = max(settings.rounds, 1)
    speedup = settings.target_speedup
    if speedup is None:  # a latency: the dense model's time on the same target first
        from netslim.structural.latency_alloc import target_of
        from netslim.structural.latency_measure import rebatch
        from netslim.structural.op_timing import model_ms

        target = target_of(build_config(settings), example_inputs)
        dense = model_ms(model, rebatch(example_inputs, target.batch), target)
        speedup = max(1.0, dense / settings.target_latency_ms)
    return [speedup ** (1 / rounds)] * rounds


def _round_speedup(per_round: list[float], index: int, done: list[dict[str, Any]]) -> float:
    """Round ``index``'s speed-up over the model it starts from: the target's share up to this
    round (the product of ``per_round`` so far) over what the earlier rounds' checks measured,
    so a round that overshot or fell short is made up by the next instead of carried into the
    total (a 1.5x target in 2 rounds of 1.22x each measured 1.27x and 1.20x: 1.52x)."""
    reached = math.prod(
        (summary.get("latency") or {}).get("measured_speedup") or planned
        for summary, planned in zip(done, per_round, strict=False)
    )
    return max(1.0, math.prod(per_round[: index + 1]) / reached)


def _run_agp(
    model: nn.Module, settings: JobSettings, trainer: _Trainer, total: int, ckpt: Any
) -> dict[str, Any]:
    from netslim.distributed import broadcast_masks_, verify_consistent
    from netslim.schedules import AGPScheduler

    scheduler = AGPScheduler(
        model, build_config(settings), total_steps=total, s_init=settings.agp_start
    )

    def restore(saved: dict[str, Any]) -> None:
        scheduler.current = saved["current"]
        scheduler.updates = [tuple(u) for u in saved["updates"]]

    ckpt.track("agp", lambda: {"current": scheduler.current, "updates": scheduler.updates}, restore)

    def on_step(step: int) -> None:
        if scheduler.on_step(step) is not None:
            broadcast_masks_(model)  # rank 0 decides
            verify_consistent(model, what=f"AGP update at step {step}")

    if scheduler.start() is not None:  # --agp-start; a resumed run has its masks already
        broadcast_masks_(model)
    trainer.fit(model, settings.finetune_epochs, on_step=on_step)
    return {"schedule": "agp", "total_steps": total, "start_sparsity": settings.agp_start}


def _open_checkpoint(settings: JobSettings, on_checkpoint: Callable[[Path], None] | None) -> Any:
    from netslim.training.checkpoint import NoCheckpoint, RunCheckpoint

    if settings.resume:
        directory = RunCheckpoint.find(settings.resume)
        every = settings.checkpoint_every or None  # None: keep the interrupted run's interval
        return RunCheckpoint(
            directory,
            every=every,
            fingerprint=fingerprint(settings),
            resume=True,
            after_save=on_checkpoint,
        )
    if settings.checkpoint_every:
        directory = Path(settings.checkpoint_dir or Path(settings.out) / "checkpoints")
        return RunCheckpoint(
            directory,
            every=settings.checkpoint_every,
            fingerprint=fingerprint(settings),
            after_save=on_checkpoint,
        )
    return NoCheckpoint()


def run_job(
    settings: JobSettings, *, on_checkpoint: Callable[[Path], None] | None = None
) -> dict[str, Any]:
    """Run a whole prune job and write ``report.json``, ``report.png`` and the model to ``out``.

    Under ``torchrun`` every rank calls this with the same settings (checked); only rank 0
    writes files. ``on_checkpoint(path)`` runs on rank 0 after each checkpoint is committed.
    """
    from netslim.distributed import (
        barrier,
        init_from_env,
        is_main,
        log,
        verify_consistent,
        verify_same,
        world_size,
    )
    from netslim.training import evaluate, seed_everything

    started = time.perf_counter()
    init_from_env()
    verify_same(fingerprint(settings), "job settings")
    seed_everything(settings.seed)
    build_config(settings)  # validate the method settings before spending time on training
    check_out(settings.out)
    if settings.checkpoint_dir:
        check_out(settings.checkpoint_dir, flag="--checkpoint-dir")
    settings = replace(settings, data=resolve_data(settings.data, settings.model))
    check_training_settings(settings)
    from netslim.jobs.model_data import data_shape, model_and_data

    model, train_loader, test_loader = model_and_data(settings)
    if settings.weights:
        from netslim.models.weights import load_weights

        load_weights(model, settings.weights)
    example_inputs = make_example_inputs(model, settings.example_shape or data_shape(train_loader))
    check_inputs(model, example_inputs, settings)

    ckpt = _open_checkpoint(settings, on_checkpoint)
    if ckpt.resuming:
        model = ckpt.load_model()
        log(f"resuming from {ckpt.latest()}")
    trainer = _Trainer(settings, train_loader, checkpoint=ckpt, test_loader=test_loader)
    regularizer = _regularizer(settings, model, example_inputs)
    on_step = getattr(regularizer, "step", None)
    ckpt.stage(
        "train",
        # gate: --epochs trains the weights together with the gates, inside the pruning step
        lambda: trainer.fit(
            model,
            0 if settings.method == "gate" else settings.epochs,
            regularizer=regularizer,
            on_step=on_step,
        ),
    )
    settings = _slimming_criterion(settings, model)

    def snapshot(m: nn.Module) -> dict[str, Any]:
        # Rank 0 measures (every rank would get the same numbers, latency aside); others wait.
        result = {}
        if is_main():
            result = measure(
                m,
                example_inputs,
                loader=test_loader,
                evaluate=evaluate,
                latency=settings.latency,
                latency_batch=LATENCY_BATCH,
            )
        barrier()
        return result

    before = ckpt.stage("measure:before", lambda: snapshot(model))
    if settings.distill:
        if ckpt.skipped("teacher"):
            trainer.teacher = ckpt.load_model("teacher").eval()
        ckpt.stage("teacher", lambda: setattr(trainer, "teacher", copy_model(model).eval()))
    baseline = None
    if settings.dense_baseline and is_main():
        baseline = _dense_baseline(model, settings, train_loader, test_loader)
    steps = _apply_schedule(model, settings, trainer, example_inputs, ckpt)
    # DDP keeps replicas equal; proving it costs one hash per rank and catches any drift.
    if world_size() > 1:
        final = verify_consistent(model, what="job", include_weights=True)
        log(f"final model fingerprint {final[:16]}")
    masks = masks_summary(settings, model)
    # what is deployed: unstructured masks folded into the weights (measured and saved so;
    # --keep-masks saves them attached, and the numbers still describe the folded model)
    if settings.method == "unstructured" and not settings.keep_masks:
        from netslim.unstructured.method import fold_masks

        fold_masks(model)
    after = snapshot(folded_copy(model)[0] if iter_masks(model) else model)

    report = make_report(settings, before, after, steps, masks)
    report["example_shape"] = list(example_inputs[0].shape)  # what eval and export run at
    report["budget"] = training_budget(settings, baseline)
    report["warnings"] = result_warnings(steps)
    report["data"] = data_summary(settings, train_loader, test_loader)
    if settings.quantize and is_main():
        report["quantize"] = _quantize(model, settings, example_inputs, train_loader, test_loader)
        report.update(_compressed(model, settings))
    report["seconds"] = round(time.perf_counter() - started, 2)
    if is_main():
        out = Path(settings.out)
        save(model, out / "model")
        (out / "report.json").write_text(json.dumps(report, indent=2, default=json_default))
        from netslim.report import write_plot

        write_plot(report, out / "report.png")
    barrier()
    return report


def _dense_baseline(
    model: nn.Module, settings: JobSettings, train_loader: Any, test_loader: Any
) -> dict[str, Any] | None:
    """``--dense-baseline``: the unpruned model trained for the same extra epochs the pruned
    one gets, so 'after' is compared with a dense model of the same budget."""
    from netslim.training import evaluate

    if train_loader is None or test_loader is None:
        raise ConfigError("--dense-baseline trains and measures: give --data")
    dense = copy_model(model)
    extra = extra_epochs(settings)
    _Trainer(settings, train_loader).fit(dense, extra)
    return {"accuracy": evaluate(dense, test_loader), "extra_epochs": extra}


def _compressed(model: nn.Module, settings: JobSettings) -> dict[str, Any]:
    """``--quantize int8`` also writes ``model.nsz``: the sparse positions and the int8 values
    (one scale per output channel, as the run's int8 model uses), zstd on top."""
    from netslim.compress import compress

    result = compress(model, Path(settings.out) / "model.nsz", values="int8-channel")
    return {
        "compressed": result.as_dict(),
        "compressed_bytes": result.bytes,
        "dense_fp32_bytes": result.dense_fp32_bytes,
    }


def _quantize(model, settings, example_inputs, train_loader, test_loader) -> dict[str, Any]:
    """``--quantize int8``: see ``netslim.jobs.quantize`` (writes model_int8.onnx to ``out``)."""
    from netslim.jobs.quantize import quantize_job

    return quantize_job(
        model,
        example_inputs,
        train_loader=train_loader,
        test_loader=test_loader,
        out=Path(settings.out),
        latency=settings.latency,
    )
