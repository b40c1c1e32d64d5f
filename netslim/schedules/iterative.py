"""Sparsity targets for iterative pruning: prune a little, fine-tune, repeat.

``geometric`` (default) removes the same fraction p of the *remaining* weights each round, as in
Han et al. (2015) and Frankle & Carbin (2019): after round i the density is (1 - final)^(i/k).
``linear`` raises the sparsity by equal steps of final/k.
"""

from __future__ import annotations

from typing import Literal

from netslim.errors import ConfigError
from netslim.schedules._checks import check_int, check_sparsity

MODES = ("geometric", "linear")


def iterative_ratios(
    final: float, steps: int, *, mode: Literal["geometric", "linear"] = "geometric"
) -> list[float]:
    """Cumulative sparsity after each of ``steps`` rounds; the last one is exactly ``final``."""
    final = check_sparsity("final sparsity", final)
    steps = check_int("steps", steps, 1)
    if mode == "geometric":
        ratios = [1.0 - (1.0 - final) ** (i / steps) for i in range(1, steps)]
    elif mode == "linear":
        ratios = [final * i / steps for i in range(1, steps)]
    else:
        raise ConfigError(f"unknown iterative mode {mode!r}: choose one of {', '.join(MODES)}")
    return [*ratios, final]
