"""The prune job behind ``netslim prune`` and the demo: train → measure → prune → fine-tune →
measure → save → report. Each step calls the module that owns it; this file only orders them.

Each step is a checkpoint *stage* (``netslim.training.checkpoint``): with ``checkpoint_every``
the training stages save every N steps, and ``resume`` skips the finished stages and continues
the interrupted one. Under ``torchrun`` every rank runs the job; rank 0 writes every file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netslim.core.copying import copy_model
from netslim.core.masks import folded_copy, iter_masks
from netslim.errors import ConfigError, warn
from netslim.io import save
from netslim.measure import measure
from netslim.methods import JOB_METHODS, config_from_settings
from netslim.models.spec import make_example_inputs
from netslim.reconstruct.policy import auto_reconstruct

LATENCY_BATCH = 64  # the report times batch 1 and a batch of this size
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
    agp_start: float = 0.0  # --schedule agp: the sparsity masked before the first step
    l1_reg: float = 0.0
    l1_warmup: int = 0  # slimming: steps over which the BN-scale penalty ramps up
    per_module: str | None = None  # channel/slimming: JSON {module: ratio} (netslim sensitivity)
    remove: int | None = None  # layer: remove N blocks (instead of --ratio)
    target_open: int | None = None  # gate: blocks left open (default: half)
    per_input: bool = False  # gate: a per-sample gating head per block (conditional compute)
    data: str | None = "auto"  # auto: the data set that fits the model family (zoo: Fashion-MNIST)
    val_split: float | None = None  # folders / hf: sets without a validation split
    image_column: str | None = None  # hf: sets (detected when None)
    text_column: str | None = None
    label_column: str | None = None
    epochs: int = 2
    finetune_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 128
    limit_train: int | None = None
    limit_test: int | None = None
    distill: bool = False
    target_macs: float | None = None
    target_latency_ms: float | None = None  # channel: whole-model ms on --runtime to prune down to
    target_speedup: float | None = None  # channel: times faster than the dense model on --runtime
    runtime: str = "torch"  # channel time targets: torch | onnxruntime | cuda
    threads: int = 1  # channel time targets: intra-op threads timed
    batch: int | None = None  # channel time targets: batch timed (default: the example's)
    round_to: int = 1
    blocks: bool = False  # channel, with a time target: residual blocks may go whole
    ignore: list[str] = field(default_factory=list)  # outputs keep their width (see Channels)
    freeze: list[str] = field(default_factory=list)  # channel: modules left whole, inputs too
    # least-squares refit after pruning (docs/recovery.md); None: auto, the API's default rule
    reconstruct: bool | None = None
    example_shape: list[int] | None = None
    latency: bool = True
    progress: bool = True
    out: str = "runs/prune"
    seed: int = 0
    quantize: str | None = None  # "int8": quantize after fine-tuning (netslim.jobs.quantize)
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    resume: str | None = None
    weights: str | None = None  # trained weights for the spec (safetensors or a state dict)
    keep_masks: bool = False  # unstructured: save masks attached instead of folded weights
    dense_baseline: bool = False  # also fine-tune a dense copy with the pruned model's budget

    def __post_init__(self) -> None:
        if self.method not in JOB_METHODS:
            raise ConfigError(
                f"unknown method {self.method!r}: choose one of {', '.join(JOB_METHODS)}"
            )
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
        if self.quantize not in (None, "int8"):
            raise ConfigError(f"unknown --quantize {self.quantize!r}: the only choice is int8")
        if self.reconstruct and self.method not in RECONSTRUCTING:
            raise ConfigError(
                f"--reconstruct refits pruned layers of unstructured/channel/slimming pruning, "
                f"not --method {self.method}"
            )
        if self.method in RECONSTRUCTING:
            self.reconstruct = resolve_reconstruct(self)
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint-every must be >= 0, got {self.checkpoint_every}")
        self._check_method_settings()
        if self.blocks and self.target_latency_ms is None and self.target_speedup is None:
            raise ConfigError(
                "--blocks needs --target-latency or --target-speedup: whole blocks are chosen "
                "against widths by the time they save"
            )

    def _check_method_settings(self) -> None:
        """A setting the chosen method does not read is an error naming the method (each
        method package lists what it reads: ``netslim.methods``), as is a schedule it lacks."""
        from netslim.methods import methods_reading, settings_read_by

        read = settings_read_by(self.method)
        for f in fields(self):
            if f.name in JOB_LEVEL or f.name in read or getattr(self, f.name) == _default(f):
                continue
            users = ", ".join(methods_reading(f.name)) or "no method"
            raise ConfigError(
                f"{flag_name(f.name)} does not apply to --method {self.method} "
                f"(it applies to: {users})"
            )
        if self.rounds != _DEFAULTS["rounds"] and self.schedule != "iterative":
            raise ConfigError("--rounds applies to --schedule iterative")
        if self.agp_start != _DEFAULTS["agp_start"] and self.schedule != "agp":
            raise ConfigError("--agp-start applies to --schedule agp")
        if not 0.0 <= self.agp_start < max(self.ratio, 1e-12):
            raise ConfigError(
                f"--agp-start must be in [0, --ratio {self.ratio:g}), got {self.agp_start}"
            )
        if self.schedule == "agp" and self.method != "unstructured":
            raise ConfigError("the agp schedule is available for --method unstructured")
        if self.method in ("layer", "gate") and self.schedule != "oneshot":
            raise ConfigError(f"--method {self.method} runs one-shot (no --schedule)")
        if self.method == "slimming" and self.l1_reg == 0:
            warn(
                "--method slimming without --l1-reg trains no sparsity penalty: channels are "
                "ranked by the BN scales as trained (network slimming uses e.g. --l1-reg 1e-4)"
            )


# Settings every method reads: the rest belong to methods (``MethodSpec.flags``).
JOB_LEVEL = frozenset(
    {"model", "method", "schedule", "data", "epochs", "finetune_epochs", "lr", "batch_size"}
    | {"limit_train", "limit_test", "distill", "example_shape", "latency", "progress", "out"}
    | {"seed", "quantize", "checkpoint_every", "checkpoint_dir", "resume", "weights"}
    | {"dense_baseline"}
    | {"val_split", "image_column", "text_column", "label_column"}  # read by the data source
)
_FLAG_NAMES = {"target_latency_ms": "--target-latency", "latency": "--no-latency"}


def flag_name(setting: str) -> str:
    """The ``netslim prune`` flag of a job setting (report names are CLI names)."""
    return _FLAG_NAMES.get(setting, "--" + setting.replace("_", "-"))


def _default(f: Any) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


_DEFAULTS = {f.name: _default(f) for f in fields(JobSettings)}


RECONSTRUCTING = ("unstructured", "channel", "slimming")  # methods that read --reconstruct


def resolve_reconstruct(settings: JobSettings) -> bool:
    """``--reconstruct`` as given, else the API's auto default (``auto_reconstruct``, the one
    rule for both): the job has calibration batches with ``--data`` and fine-tunes after
    pruning when ``--finetune-epochs`` > 0. ``--reconstruct`` without data is one line."""
    has_data = settings.data not in (None, "none")
    if settings.reconstruct and not has_data:
        raise ConfigError("--reconstruct needs calibration batches: give --data")
    return auto_reconstruct(
        settings.reconstruct,
        method_kind=settings.method,
        has_calibration=has_data,
        finetunes_after=settings.finetune_epochs > 0,
    )


# Settings that change where files go or what is shown, never the result.
_NOT_FINGERPRINTED = ("out", "progress", "latency", "checkpoint_every", "checkpoint_dir", "resume")


def fingerprint(settings: JobSettings) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint."""
    from netslim.distributed import world_size

    values = {k: v for k, v in asdict(settings).items() if k not in _NOT_FINGERPRINTED}
    return {**values, "world_size": world_size()}


def build_config(settings: JobSettings, ratio: float | None = None) -> Any:
    """The method's config object for one pruning step (``ratio`` overrides for schedules);
    each method package maps the settings to its config (``netslim.methods``)."""
    return config_from_settings(settings, settings.ratio if ratio is None else ratio)


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
            step = replace(settings, target_latency_ms=None, target_speedup=time_steps[index])
        summary = prune_step_(
            model,
            step,
            settings.ratio if ratio is None else ratio,
            example_inputs=example_inputs,
            train_loader=trainer.train_loader,
        )
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
    """Per-round speed-ups of an iterative schedule with a time target: the same factor each
    round (geometric), so the last round lands on the target; [] when there is none."""
    if settings.schedule != "iterative" or settings.method not in ("channel", "slimming"):
        return []
    if settings.target_speedup is None and settings.target_latency_ms is None:
        return []
    rounds = max(settings.rounds, 1)
    speedup = settings.target_speedup
    if speedup is None:  # a latency: the dense model's time on the same target first
        from netslim.structural.latency_alloc import target_of
        from netslim.structural.latency_table import rebatch
        from netslim.structural.op_timing import model_ms

        target = target_of(build_config(settings), example_inputs)
        dense = model_ms(model, rebatch(example_inputs, target.batch), target)
        speedup = max(1.0, dense / settings.target_latency_ms)
    return [speedup ** (1 / rounds)] * rounds


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
    check_inputs(model, example_inputs, settings, train_loader)

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
    masks = _masks_summary(settings, model)
    # what is deployed: unstructured masks folded into the weights (measured and saved so;
    # --keep-masks saves them attached, and the numbers still describe the folded model)
    if settings.method == "unstructured" and not settings.keep_masks:
        from netslim.unstructured.method import fold_masks

        fold_masks(model)
    after = snapshot(folded_copy(model)[0] if iter_masks(model) else model)

    report = _make_report(settings, before, after, steps, masks)
    report["example_shape"] = list(example_inputs[0].shape)  # what eval and export run at
    report["budget"] = _budget(settings, baseline)
    report["warnings"] = _warnings(steps)
    report["data"] = _data_summary(settings, train_loader, test_loader)
    if settings.quantize and is_main():
        report["quantize"] = _quantize(model, settings, example_inputs, train_loader, test_loader)
        report.update(_compressed(model, settings))
    report["seconds"] = round(time.perf_counter() - started, 2)
    if is_main():
        out = Path(settings.out)
        save(model, out / "model")
        (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
        from netslim.report import write_plot

        write_plot(report, out / "report.png")
    barrier()
    return report


def check_training_settings(settings: JobSettings) -> None:
    """Settings that only act through training need data (``settings.data`` resolved: None is
    no data); without it they would be silently ignored."""
    if settings.data is not None:
        return
    for flag, given in (("--distill", settings.distill), ("--l1-reg", settings.l1_reg > 0)):
        if given:
            raise ConfigError(f"{flag} acts during training, and without --data nothing trains")


def _extra_epochs(settings: JobSettings) -> int:
    """Training the pruned model gets after the 'before' measurement (none without data)."""
    if settings.data is None:
        return 0
    if settings.method == "gate":
        return settings.epochs  # gates and weights train together inside the pruning step
    rounds = settings.rounds if settings.schedule == "iterative" else 1
    return settings.finetune_epochs * rounds


def _dense_baseline(
    model: nn.Module, settings: JobSettings, train_loader: Any, test_loader: Any
) -> dict[str, Any] | None:
    """``--dense-baseline``: the unpruned model trained for the same extra epochs the pruned
    one gets, so 'after' is compared with a dense model of the same budget."""
    from netslim.training import evaluate

    if train_loader is None or test_loader is None:
        raise ConfigError("--dense-baseline trains and measures: give --data")
    dense = copy_model(model)
    extra = _extra_epochs(settings)
    _Trainer(settings, train_loader).fit(dense, extra)
    return {"accuracy": evaluate(dense, test_loader), "extra_epochs": extra}


def _budget(settings: JobSettings, baseline: dict[str, Any] | None) -> dict[str, Any]:
    """What 'before' and 'after' were trained with, said plainly in the report."""
    extra = _extra_epochs(settings)
    if settings.data is None:
        before = "the model as built or loaded (no data: nothing trained)"
    elif settings.method == "gate":
        before = "the model as built or loaded (gate training happens in the pruning step)"
    else:
        before = f"the dense model after {settings.epochs} training epoch(s)"
    budget: dict[str, Any] = {
        "before": before,
        "after": f"pruned, with {extra} more training epoch(s) than 'before'",
        "dense_baseline": baseline,
    }
    if baseline is None and extra:
        budget["note"] = (
            f"the dense model did not get those {extra} extra epoch(s), so part of any accuracy "
            "change is training, not pruning: pass --dense-baseline to train a dense copy with "
            "the same budget"
        )
    return budget


def _warnings(steps: list[dict[str, Any]]) -> list[str]:
    """Results the user should not read as success without a second look."""
    from netslim.errors import warn

    found = []
    for step in steps:
        opened, target = step.get("open_after_training"), step.get("target_open")
        if opened is not None and target is not None and opened != target:
            found.append(
                f"gate training left {opened} gates open, not the target {target}: the {target} "
                "blocks with the highest gate logits were kept anyway (train longer with "
                "--epochs, or check the result)"
            )
    for message in found:
        warn(message)
    return found


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


def _data_summary(settings: JobSettings, train_loader: Any, test_loader: Any) -> dict[str, Any]:
    """What the model was trained and scored on: sizes, classes, input shape, preprocessing."""
    from netslim.data import loader_info

    info = loader_info(test_loader)
    if info is None:
        return {"source": settings.data}
    return {
        "source": settings.data,
        "train_samples": len(train_loader.dataset),
        "test_samples": len(test_loader.dataset),
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "preprocessing": info.preprocessing,
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


def _make_report(
    settings: JobSettings,
    before: dict[str, Any],
    after: dict[str, Any],
    steps: list[dict[str, Any]],
    masks: dict[str, Any],
) -> dict[str, Any]:
    report: dict[str, Any] = {"settings": asdict(settings)}
    for key in (
        "params",
        "nonzero_params",
        "macs",
        "latency_ms",
        "latency_batch_ms",
        "size_bytes",
        "accuracy",
    ):
        report[f"{key}_before"] = before.get(key)
        report[f"{key}_after"] = after.get(key)
    report.update(masks)
    widths_before, widths_after = before.get("widths", {}), after.get("widths", {})
    report["widths"] = {
        name: [widths_before[name], widths_after[name]]
        for name in widths_before
        if name in widths_after
    }
    # report names are CLI names (the method packages say "gates"/"layers")
    report["steps"] = [
        {**s, "method": _CLI_NAMES.get(s["method"], s["method"])} if "method" in s else s
        for s in steps
    ]
    pruned = [s["accuracy_after_prune"] for s in steps if "accuracy_after_prune" in s]
    report["accuracy_after_prune"] = pruned[-1] if pruned else None
    return report


_CLI_NAMES = {"gates": "gate", "layers": "layer", "structural": "channel"}


def _masks_summary(settings: JobSettings, model: nn.Module) -> dict[str, Any]:
    """Per-tensor sparsity (and whether the N:M pattern holds), read from the masks."""
    from netslim.core.masks import sparsity_report
    from netslim.unstructured.settings import parse_nm

    summary: dict[str, Any] = {"sparsity": sparsity_report(model)}
    nm = parse_nm(settings.nm)
    if nm is not None:
        from netslim.unstructured.nm import check_nm

        summary["nm_pattern_holds"] = all(
            check_nm(mask.float(), *nm) for mask in iter_masks(model).values()
        )
    return summary


# zoo models take 1x28x28 images and 10 classes: every built-in data set fits them
_DEFAULT_DATA = {"zoo": "fashion-mnist"}


def resolve_data(data: str | None, model: str) -> str | None:
    """``auto`` (the default) -> the data set that fits the model family, or a clear error
    (after the model spec's own, which comes first)."""
    from netslim.models.spec import check_spec

    check_spec(model)
    if data != "auto":
        return None if data in (None, "none") else data
    scheme = model.partition(":")[0]
    if scheme in _DEFAULT_DATA:
        return _DEFAULT_DATA[scheme]
    raise ConfigError(
        f"{model} has no default data set: give --data (an image folder DIR, hf:PATH, "
        "fashion-mnist, digits, synthetic) or --data none to prune without training or accuracy"
    )


def default_run_dir(model: str, job: str) -> Path:
    """``runs/<model>-<job>``, the spec made a folder name: where a command writes without
    ``--out``."""
    return Path("runs") / f"{model.replace(':', '-').replace('/', '_')}-{job}"


def check_out(out: str, flag: str = "--out") -> None:
    """The output directory must be creatable: checked before any work."""
    path = Path(out)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {out}: {parent} exists and is not a directory")
            break


def _forward(model: nn.Module, inputs: tuple) -> tuple[Any, str | None]:
    """``(output, None)`` of an inference forward of ``inputs``, or ``(None, the first line of
    what it raised)``."""
    from netslim.measure._call import inference

    try:
        with inference(model):
            return model(*inputs), None
    except Exception as exc:  # any failure of the user's model on these inputs
        text = str(exc).strip().splitlines()
        return None, text[0] if text else type(exc).__name__


def check_example_fits(
    model: nn.Module, example_inputs: tuple, spec: str, flag: str = "--example-shape"
) -> None:
    """One forward of the example inputs: a shape that does not fit is one line naming
    ``flag``, before any training."""
    _, error = _forward(model, example_inputs)
    if error is not None:
        shape = ",".join(str(d) for d in example_inputs[0].shape)
        raise ConfigError(
            f"the example input {shape} does not fit {spec} ({error}): "
            f"give {flag} matching the model's input"
        )


def check_inputs(
    model: nn.Module, example_inputs: tuple, settings: JobSettings, loader: Any
) -> None:
    """One forward on the example inputs (and on one sample of the data): a shape that does not
    fit is one line naming the flag, before any training; then the method's own checks of its
    settings against the model (``netslim.methods.preflight``: module names, block counts,
    N:M fit)."""
    from netslim.methods import preflight

    check_example_fits(model, example_inputs, settings.model)
    preflight(settings.method, model, build_config(settings), example_inputs)
    if loader is not None and not isinstance(loader.dataset[0][0], torch.Tensor):
        return
    if loader is not None:
        sample = loader.dataset[0][0].unsqueeze(0)
        output, error = _forward(model, (sample,))
        if error is not None:
            shape = ",".join(str(d) for d in sample.shape)
            raise ConfigError(
                f"--data {settings.data} gives inputs of shape {shape}, which do not fit "
                f"{settings.model} ({error}): give --data that fits the model"
            )
        _check_classifier(output, settings, loader)


def _check_classifier(output: Any, settings: JobSettings, loader: Any) -> None:
    """With data, netslim trains with cross-entropy and scores accuracy: the model's output on
    a sample must hold logits, one per class of the data (a detection model's dict does not)."""
    from netslim.data import loader_info
    from netslim.training import logits_of

    try:
        logits = logits_of(output)
    except ConfigError as exc:
        raise ConfigError(f"--data {settings.data}: {settings.model}: {exc}") from None
    info = loader_info(loader)
    if info is not None and logits.shape[-1] < info.num_classes:
        raise ConfigError(
            f"--data {settings.data} has {info.num_classes} classes, and {settings.model} gives "
            f"{logits.shape[-1]} logits: give a model with a head for them"
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)
