"""``Channels``: the structural pruning config (what to remove, how much, how to choose)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from netslim.core.config import ConfigBase
from netslim.errors import ConfigError
from netslim.reconstruct.policy import check_requested
from netslim.structural.importance import CRITERIA
from netslim.structural.op_timing import check_target


def _check_ratio(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            f"{what} must be in [0, 1), got {value}: it is the fraction of channels removed "
            "from each group and a group is never emptied"
        )


@dataclass
class Channels(ConfigBase):
    """Remove channels, filters and attention heads physically.

    ratio: fraction of each group's indices removed (``scope="local"``) or of all indices
        (``"global"``, ranked by scores normalised per group). Kept counts are clamped so every
        group keeps at least ``max(1, round_to)`` indices.
    criterion: a name in ``netslim.structural.importance.CRITERIA``: ``"l2"``/``"l1"`` norm of
        every slice an index owns across its group, ``"random"`` (seeded), ``"bn"`` (|γ|,
        network slimming), ``"fpgm"``, ``"lamp"``; data-driven ``"taylor"``, ``"fisher"``,
        ``"wanda"``, ``"apoz"``, ``"activation"`` need ``prune_(..., train_loader=...)``.
    calibration_batches: how many calibration batches data-driven criteria read.
    target_macs / target_params: fraction of the original MACs / parameters to *keep*; the
        ratio is searched to reach it (overrides ``ratio``). Global ranking unless
        ``scope="local"`` is given: then one uniform ratio for every group, which keeps layer
        widths even (often faster per MAC on CPU, usually less accurate).
    target_latency_ms / target_speedup: a time budget on ``runtime`` with ``threads`` threads at
        ``batch`` (default: the example inputs' batch): whole-model ms, or the dense model's
        measured time divided by the speed-up. Widths are chosen by a knapsack over a latency
        table measured on this machine (each conv/linear timed at a grid of widths, cached under
        ``~/.cache/netslim/latency``), keeping the most importance within the budget on the fast
        end of each latency staircase (see docs/latency.md); every group keeps at least a
        quarter of its channels (``latency_knapsack.MIN_KEEP_FRACTION``), or down to a sixteenth
        when only that reaches the target (the report's note says so). Machine-specific by
        design.
    runtime: ``"torch"`` (eager, CPU), ``"onnxruntime"`` (CPU) or ``"cuda"`` for a time target.
    per_module: ratio override for groups owned by these modules (a group takes the override of
        its first member in parameter order that matches, including parent modules).
    ignore: modules whose *outputs* keep their width: no channel a listed module (or any
        module inside it) returns is removed, while its inputs may shrink with the layer
        before (Torch-Pruning's ``ignored_layers``: ``ignore=("fc",)`` keeps a classifier's
        classes and still prunes the block that feeds it). Unknown names are an error.
    freeze: modules left entirely alone: every parameter/buffer of a listed module keeps
        its shape, inputs included (so the layer feeding it keeps its outputs too).
    round_to: kept counts are rounded up to a multiple of this (e.g. 8 for tensor cores).
        Under an ONNX Runtime time target the plan's widths are also whole blocks of its
        NCHWc layout (8 channels, 16 with AVX-512; ``op_timing.width_multiple``).
    within_heads: also remove channels *inside* attention heads when the heads themselves are
        prunable (by default whole heads are removed and head_dim is kept).
    conv_groups: also remove whole groups of grouped convolutions / GroupNorm (by default the
        group count is kept and channels are removed evenly inside every group).
    blocks: under a time target, the plan may also remove whole residual blocks (a block in
        an ``nn.Sequential``/``nn.ModuleList`` whose output is its input plus a branch), chosen
        in the same knapsack as the widths: a block saves its layers' time and its per-op time,
        which no width removes, and loses its inner channels' importance times a weight
        (``latency_blocks.BLOCK_WEIGHT``; with calibration batches, each block's weight follows
        what bypassing it costs: ``latency_blocks.block_weights``, one forward pass per block
        and batch on up to ``latency_blocks.BLOCK_SAMPLES`` samples, its seconds in the
        report's ``block_weights_s``). A removed block becomes a
        ``latency_blocks.BypassedBlock`` (it returns its input); a block that returns a tuple
        is kept whole (named in the report's ``blocks_kept_whole``).
    reconstruct: after removal, refit every conv/linear that lost input channels by least
        squares so its outputs on ``calibration_batches`` batches of ``prune_(...,
        train_loader=...)`` match the dense model's (no labels used), then re-estimate
        BatchNorm statistics on them. ``None`` (the default, as on the command line): on
        whenever ``prune_`` gets calibration batches, off without them
        (``netslim.reconstruct.auto_reconstruct``; docs/recovery.md measured why). ``True``
        without data is an error; ``False`` prunes by plain removal.
    """

    ratio: float = 0.5
    criterion: str = "l2"
    target_macs: float | None = None
    target_params: float | None = None
    target_latency_ms: float | None = None
    target_speedup: float | None = None
    runtime: str = "torch"
    threads: int = 1
    batch: int | None = None
    scope: str | None = None  # None: "local" for a ratio, "global" for a target
    per_module: dict[str, float] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()
    round_to: int = 1
    seed: int = 0
    within_heads: bool = False
    conv_groups: bool = False
    calibration_batches: int = 8
    reconstruct: bool | None = None
    blocks: bool = False

    @property
    def time_target(self) -> bool:
        """A latency or speed-up target: widths come from the latency table's knapsack."""
        return self.target_latency_ms is not None or self.target_speedup is not None

    def __post_init__(self) -> None:
        _check_ratio(self.ratio, "ratio")
        check_requested(self.reconstruct)
        if self.criterion not in CRITERIA:
            raise ConfigError(
                f"unknown criterion {self.criterion!r} (choose from {', '.join(CRITERIA)})"
            )
        b = self.calibration_batches
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"calibration_batches must be a positive int, got {b!r}")
        if self.scope not in (None, "local", "global"):
            raise ConfigError(f"scope must be 'local' or 'global', got {self.scope!r}")
        for name in ("target_macs", "target_params"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not 0.0 < v <= 1.0):
                raise ConfigError(f"{name} must be a fraction in (0, 1] of the original, got {v!r}")
        v = self.target_latency_ms
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < math.inf
        ):
            raise ConfigError(f"target_latency_ms must be a positive number of ms, got {v!r}")
        v = self.target_speedup
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 1.0 <= v < math.inf
        ):
            raise ConfigError(f"target_speedup must be a number >= 1 (times faster), got {v!r}")
        check_target(self.runtime, self.threads, 1 if self.batch is None else self.batch)
        targets = ("target_macs", "target_params", "target_latency_ms", "target_speedup")
        given = [name for name in targets if getattr(self, name) is not None]
        if len(given) > 1:
            raise ConfigError(f"give one of {', '.join(targets)}, not {' and '.join(given)}")
        if not isinstance(self.per_module, dict):
            raise ConfigError("per_module must be a dict {module name: ratio}")
        for name, r in self.per_module.items():
            _check_ratio(r, f"per_module[{name!r}]")
        for name in ("ignore", "freeze"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple, set, frozenset)) or not all(
                isinstance(v, str) for v in value
            ):
                raise ConfigError(f"{name} must list module names, got {value!r}")
            setattr(self, name, tuple(value))
        if (
            not isinstance(self.round_to, int)
            or isinstance(self.round_to, bool)
            or self.round_to < 1
        ):
            raise ConfigError(f"round_to must be a positive int, got {self.round_to!r}")
        if not isinstance(self.blocks, bool):
            raise ConfigError(f"blocks must be True or False, got {self.blocks!r}")
        if self.blocks and not self.time_target:
            raise ConfigError(
                "blocks=True needs a time target (target_latency_ms or target_speedup): whole "
                "blocks are chosen against widths by the time they save"
            )
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
