"""Sparsity targets for iterative pruning: prune a little, fine-tune, repeat.

``geometric`` (default) removes the same fraction p of the *remaining* weights each round, as in
Han et al. (2015) and Frankle & Carbin (2019): after round i the density is (1 - final)^(i/k).
``linear`` raises the sparsity by equal steps of final/k.
"""

from __future__ import annotations

from typing import Literal

from netslim.core.config import choice
from netslim.schedules._checks import check_int, check_sparsity

MODES = ("geometric", "linear")


def iterative_ratios(
    final: float, steps: int, *, mode: Literal["geometric", "linear"] = "geometric"
) -> list[float]:
    """Cumulative sparsity after each of ``steps`` rounds; the last one is exactly ``final``."""
    final = check_sparsity("final sparsity", final)
    steps = check_int("steps", steps, 1)
    choice("iterative mode", mode, MODES)
    if mode == "geometric":
        ratios = [1.0 - (1.0 - final) ** (i / steps) for i in range(1, steps)]
    else:
        ratios = [final * i / steps for i in range(1, steps)]
    return [*ratios, final]
