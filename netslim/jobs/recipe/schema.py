"""The fields a recipe may use: top-level settings and one dataclass per step kind.

Field types come from the annotations, so a field added here is validated (and named in errors)
without any other change.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecipeSettings:
    model: str
    data: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    batch_size: int = 128
    example_shape: list[int] | None = None  # default: one sample of data, else the model's
    # the data source's options, as `netslim prune`'s flags of the same names
    val_split: float | None = None
    image_column: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    seed: int = 0
    out: str = "runs/recipe"
    latency: bool = False


@dataclass
class TrainStep:
    epochs: int = 1
    lr: float = 1e-3


@dataclass
class PruneStep:
    method: str = "unstructured"
    ratio: float = 0.5
    scope: str = "global"
    criterion: str | None = None
    nm: str | None = None
    target_macs: float | None = None
    target_latency_ms: float | None = None
    target_speedup: float | None = None
    runtime: str = "torch"  # where a time target is measured: torch | onnxruntime | cuda
    threads: int = 1
    batch: int | None = None
    round_to: int = 1
    blocks: bool = False  # channel, with a time target: residual blocks may go whole
    ignore: list[str] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)  # channel: modules left whole, inputs too
    per_module: str | None = None  # channel: a per_module.json of `netslim sensitivity`
    remove: int | None = None  # layer: remove N blocks (instead of ratio)
    # gate: weights and gates trained together on the recipe's data for `epochs` at `lr`,
    # toward `target_open` blocks (default half); `per_input`: a per-sample gating head per block
    epochs: int = 2
    lr: float = 1e-3
    target_open: int | None = None
    per_input: bool = False
    # least-squares refit on the recipe's data after pruning; None: the rule `netslim prune`
    # follows (channel: on with data; unstructured: on with data and no finetune step after)
    reconstruct: bool | None = None


@dataclass
class FinetuneStep:
    epochs: int = 1
    lr: float = 1e-3
    distill: bool = False


@dataclass
class QuantizeStep:
    mode: str = "auto"
    calibration_batches: int = 8
    qat_epochs: int = 1
    qat_lr: float = 1e-4
    distill: bool = False


@dataclass
class CompressStep:
    values: str = "int8-channel"
    positions: str = "auto"
    file: str = "model.nsz"


@dataclass
class ExportStep:
    onnx: bool = True
    int8: bool = False
    program: bool = False


STEPS: dict[str, type] = {
    "train": TrainStep,
    "prune": PruneStep,
    "finetune": FinetuneStep,
    "quantize": QuantizeStep,
    "compress": CompressStep,
    "export": ExportStep,
}
