"""``Unstructured``: the settings of unstructured (and N:M) magnitude-style pruning."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

from netslim.core.config import ConfigBase, choice
from netslim.errors import ConfigError
from netslim.reconstruct.policy import check_requested
from netslim.unstructured.criteria import get_criterion
from netslim.unstructured.nm import validate_nm

SCOPES = ("global", "layer", "row")


@dataclass
class Unstructured(ConfigBase):
    """Prune individual weights.

    ``ratio`` is the target fraction of zeros over the targeted weights (cumulative: masks never
    grow back). ``scope="global"`` ranks all targets together, so sensitive layers keep more;
    ``"layer"`` prunes every target by ``ratio``; ``"row"`` every output row (Wanda).
    Data-driven criteria (``taylor``, ``fisher``, ``wanda``) read ``calibration_batches``
    batches of ``prune_(..., train_loader=...)``. ``nm=(N, M)`` keeps N of every M consecutive
    inputs instead and ignores ``ratio`` and ``scope``. ``ignore`` names modules to leave alone;
    the last Linear/Conv (the classifier) is left alone unless ``include_classifier``.
    ``reconstruct=True`` then updates the surviving weights of every masked Linear/Conv2d, layer
    after layer, so its outputs on ``calibration_batches`` batches of the loader match the dense
    model's (the optimal-brain-surgeon update for the chosen mask; no labels used). The default
    ``reconstruct=None`` is the command line's: on when ``prune_`` gets calibration batches (it
    never fine-tunes afterwards), off without them (``netslim.reconstruct.auto_reconstruct``;
    docs/recovery.md measured why). ``True`` without data is an error; ``False`` only masks.
    ``prune_(..., reference=dense)`` makes every step of a schedule aim at the original model's
    outputs instead of the previous step's.
    """

    ratio: float = 0.5
    scope: Literal["global", "layer", "row"] = "global"
    criterion: str = "l1"
    nm: tuple[int, int] | None = None
    ignore: tuple[str, ...] = ()
    include_bias: bool = False
    seed: int = 0
    include_classifier: bool = False
    calibration_batches: int = 8
    reconstruct: bool | None = None

    def __post_init__(self) -> None:
        ratio = self.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or math.isnan(ratio):
            raise ConfigError(f"ratio must be a number in [0, 1), got {ratio!r}")
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"ratio must be in [0, 1), got {ratio}")
        self.ratio = float(ratio)
        b = self.calibration_batches
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"calibration_batches must be a positive int, got {b!r}")
        choice("scope", self.scope, SCOPES)
        if not isinstance(self.criterion, str):
            raise ConfigError(f"criterion must be a name, got {self.criterion!r}")
        get_criterion(self.criterion)  # unknown names fail here, listing the valid ones
        if self.nm is not None:
            if not isinstance(self.nm, (tuple, list)) or len(self.nm) != 2:
                raise ConfigError(f"nm must be a pair (N, M), got {self.nm!r}")
            self.nm = (self.nm[0], self.nm[1])
            validate_nm(*self.nm)
        if isinstance(self.ignore, str):
            self.ignore = (self.ignore,)
        self.ignore = tuple(self.ignore)
        if not all(isinstance(name, str) for name in self.ignore):
            raise ConfigError(f"ignore must list module names, got {self.ignore!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        check_requested(self.reconstruct)
        for flag in ("include_bias", "include_classifier"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
