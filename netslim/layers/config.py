"""Configs for ``netslim.prune_``: :class:`Layers` (score and remove blocks) and :class:`Gates`
(learn which blocks to keep)."""

from __future__ import annotations

from dataclasses import dataclass

from netslim.core.config import ConfigBase, choice
from netslim.core.select import fraction_count
from netslim.errors import ConfigError

CRITERION_NAMES = ("block-influence", "branch-norm", "ablation")
ESTIMATORS = ("ste", "hard-concrete")


@dataclass
class Layers(ConfigBase):
    """Remove ``remove`` blocks (or ``round(ratio * removable)``) with the lowest ``criterion``.

    ``blocks`` names the candidate blocks explicitly (dotted module names); otherwise every
    shape-preserving residual block found by :func:`netslim.layers.find_blocks` is a candidate.
    ``calibration_batches`` bounds how much data the criteria look at. ``ablation`` measures
    the calibration loss (``prune_(..., loss=fn)`` or ``Calibration(loader, loss=fn)``; else
    cross-entropy on labelled batches, else the output's cosine to the dense output).
    """

    remove: int | None = None
    ratio: float | None = None
    criterion: str = "block-influence"
    blocks: tuple[str, ...] | None = None
    calibration_batches: int = 8

    def __post_init__(self) -> None:
        if (self.remove is None) == (self.ratio is None):
            raise ConfigError("give exactly one of remove (a block count) or ratio")
        if self.remove is not None and (isinstance(self.remove, bool) or self.remove < 1):
            raise ConfigError(f"remove must be a positive block count, got {self.remove!r}")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"ratio must be in (0, 1), got {self.ratio}")
        if self.criterion not in CRITERION_NAMES:
            raise ConfigError(
                f"unknown layer criterion {self.criterion!r}: choose one of "
                f"{', '.join(CRITERION_NAMES)}"
            )
        if self.calibration_batches < 1:
            raise ConfigError("calibration_batches must be >= 1")
        if self.blocks is not None:
            self.blocks = tuple(self.blocks)

    def count(self, available: int) -> int:
        """How many of ``available`` blocks to remove; at least one block must remain."""
        count = self.remove if self.remove is not None else fraction_count(self.ratio, available)
        if count >= available:
            raise ConfigError(
                f"cannot remove {count} of {available} removable blocks: at least one must remain"
            )
        return max(count, 0)


@dataclass
class Gates(ConfigBase):
    """Learn gates on removable blocks with the task loss plus a penalty on open gates.

    The task loss is cross-entropy on ``(inputs, labels)`` batches, or the user's
    ``prune_(..., loss=fn)`` on any batches it reads (``netslim.training.train(loss=)``).

    ``per_input=False``: one learnable scalar per block, open while ``sigmoid(logit) > 0.5``;
    after training the closed blocks are removed (``bake=True``) so the result is a plain,
    smaller model. ``per_input=True``: a tiny head per block decides per sample whether it runs;
    the gates stay in the model (they are the point). ``target_open`` is the number of blocks
    (static) or the mean number of executed blocks per sample (per-input) the penalty aims at;
    ``None`` means half of the removable blocks.
    """

    target_open: int | None = None
    epochs: int = 1
    lr: float = 1e-3
    penalty: float = 1.0
    estimator: str = "ste"
    per_input: bool = False
    bake: bool = True
    blocks: tuple[str, ...] | None = None
    gate_scale: float = 20.0
    init_logit: float = 2.0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.target_open is not None and self.target_open < 1:
            raise ConfigError(f"target_open must be >= 1, got {self.target_open}")
        if self.epochs < 0:
            raise ConfigError("gate epochs must be >= 0")
        if self.penalty < 0:
            raise ConfigError(f"gate penalty must be >= 0, got {self.penalty}")
        choice("gate estimator", self.estimator, ESTIMATORS)
        if self.gate_scale <= 0:
            raise ConfigError("gate_scale must be > 0")
        if self.blocks is not None:
            self.blocks = tuple(self.blocks)
