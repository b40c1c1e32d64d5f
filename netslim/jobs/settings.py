"""The settings of a prune job (``netslim prune``'s flags, the API's keywords) and what is
read off them: defaults and flag names, the fingerprint a resumed run must match, the method's
config, the data set to use and where files go.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from netslim.core.config import choice
from netslim.errors import ConfigError, warn
from netslim.methods import JOB_METHODS, config_from_settings, methods_reading, settings_read_by
from netslim.reconstruct.policy import auto_reconstruct

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
        choice("method", self.method, JOB_METHODS)
        choice("schedule", self.schedule, SCHEDULES)
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
        self._check_time_target_settings()

    def _check_time_target_settings(self) -> None:
        """A setting only a time target reads, given without one, is an error: otherwise
        ``--runtime onnxruntime`` alone would prune by the ratio and say nothing."""
        if self.target_latency_ms is not None or self.target_speedup is not None:
            return
        for f in fields(self):
            if f.name in TIME_TARGET_ONLY and getattr(self, f.name) != _default(f):
                raise ConfigError(
                    f"{flag_name(f.name)} needs --target-latency or --target-speedup: "
                    f"{TIME_TARGET_ONLY[f.name]}"
                )

    def _check_method_settings(self) -> None:
        """A setting the chosen method does not read is an error naming the method (each
        method package lists what it reads: ``netslim.methods``), as is a schedule it lacks."""

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


# Settings that only a time target reads, and what each says about it.
TIME_TARGET_ONLY = {
    "runtime": "it names the runtime the time target is measured on",
    "threads": "it sets the threads the time target is measured with",
    "batch": "it sets the batch size the time target is measured at",
    "blocks": "whole blocks are chosen against widths by the time they save",
}

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


def extra_epochs(settings: JobSettings) -> int:
    """Training the pruned model gets after the 'before' measurement (none without data)."""
    if settings.data is None:
        return 0
    if settings.method == "gate":
        return settings.epochs  # gates and weights train together inside the pruning step
    rounds = settings.rounds if settings.schedule == "iterative" else 1
    return settings.finetune_epochs * rounds


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
