"""``Lottery``: the settings of one lottery-ticket search (iterative magnitude pruning + controls).

Frankle & Carbin (ICLR 2019, "The Lottery Ticket Hypothesis") train, prune a fraction p of the
*remaining* weights, reset the survivors to their initial values and retrain, K times. Frankle et
al. (ICML 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis") rewind to an early
iteration k instead of 0; Renda et al. (ICLR 2020, "Comparing Rewinding and Fine-tuning") keep
the trained weights and only replay the learning-rate schedule from k ("lr" rewinding).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

from netslim.core.config import ConfigBase
from netslim.core.config import choice as _choice
from netslim.core.config import fraction as _fraction
from netslim.core.config import integer as _integer
from netslim.errors import ConfigError

REWINDS = ("weights", "lr")
SCOPES = ("global", "layer")
CONTROLS = ("reinit", "random_mask", "magnitude")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class Lottery(ConfigBase):
    """One IMP search.

    Pruning: ``rounds`` rounds, each removing ``rate`` of the weights still kept, ranked over all
    layers (``scope="global"``) or within each layer. The classifier (last Linear/Conv) is pruned
    at ``classifier_rate`` (default ``rate / 2``, as Frankle & Carbin do for output layers; 0 keeps
    it dense). ``masks`` names the mask maker: ``"magnitude"`` (single weights) or
    ``"channel-l1"`` / ``"channel-l2"`` (whole output channels by row norm; the classifier's
    outputs are the classes, so with channel masks it stays dense).

    Rewinding: ``rewind="weights"`` resets survivors to their values after ``rewind_iter`` steps
    of the dense run (0 = initialisation); ``"lr"`` keeps the trained weights and replays the
    learning-rate schedule from step ``rewind_iter`` (use ``schedule="cosine"``: under a constant
    lr that is plain fine-tuning). Either way a round retrains ``T - k`` steps.

    Training per round: ``iterations`` optimizer steps (default ``epochs`` passes over the data),
    ``optimizer``/``lr``/``schedule``; validation accuracy every ``eval_every`` steps (default
    T/10) gives the early-stopping ("reach") iteration. ``controls`` run at every round on the
    ticket's sparsity: ``reinit`` (ticket mask, fresh random weights), ``random_mask`` (random
    mask with the ticket's per-layer sparsity, rewound weights), ``magnitude`` (one-shot magnitude
    pruning of the trained dense net to the ticket's sparsity, then fine-tuning T - k steps).
    """

    rounds: int = 5
    rate: float = 0.2
    scope: Literal["global", "layer"] = "layer"
    classifier_rate: float | None = None
    masks: str = "magnitude"
    rewind: Literal["weights", "lr"] = "weights"
    rewind_iter: int = 0
    iterations: int | None = None
    epochs: int = 1
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    eval_every: int | None = None
    controls: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        self.rounds = _integer("rounds", self.rounds, 1)
        self.rate = _fraction("rate", self.rate)
        if self.classifier_rate is not None:
            self.classifier_rate = _fraction(
                "classifier_rate", self.classifier_rate, allow_zero=True
            )
        _choice("scope", self.scope, SCOPES)
        _choice("rewind", self.rewind, REWINDS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        if not isinstance(self.masks, str):
            raise ConfigError(f"masks must be a mask maker name, got {self.masks!r}")
        from netslim.lottery.makers import get_maker

        get_maker(self.masks)  # unknown names fail here, listing the valid ones
        self.rewind_iter = _integer("rewind_iter", self.rewind_iter, 0)
        self.iterations = _integer("iterations", self.iterations, 1, optional=True)
        self.epochs = _integer("epochs", self.epochs, 1)
        self.eval_every = _integer("eval_every", self.eval_every, 1, optional=True)
        self.seed = _integer("seed", self.seed, 0)
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for name in ("controls", "ignore"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else tuple(value)
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must list names, got {value!r}")
            setattr(self, name, value)
        for control in self.controls:
            _choice("control", control, CONTROLS)
        self.controls = tuple(dict.fromkeys(self.controls))

    @property
    def output_rate(self) -> float:
        """Per-round rate of the classifier (``rate / 2`` unless set)."""
        return self.rate / 2 if self.classifier_rate is None else self.classifier_rate

    def total_steps(self, batches_per_epoch: int | None) -> int:
        """T, the training length of every round; ConfigError when it cannot be known."""
        if self.iterations is not None:
            return self.iterations
        if not batches_per_epoch:
            raise ConfigError(
                "the training loader has no length: give iterations= (steps per round)"
            )
        return self.epochs * batches_per_epoch

    def check_length(self, total: int) -> None:
        """Rewinding to iteration k needs k < T (a round retrains T - k steps)."""
        if self.rewind_iter >= total:
            raise ConfigError(
                f"rewind_iter {self.rewind_iter} is beyond the training length: a round trains "
                f"{total} iterations, so rewind to an iteration in [0, {total - 1}]"
            )

    def as_record(self) -> dict[str, Any]:
        """Plain JSON values (tuples become lists)."""
        return self.to_dict()
