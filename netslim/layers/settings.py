"""``netslim prune --method layer|gate`` settings -> :class:`Layers` / :class:`Gates`.

Kept here so the job runner only gains one branch: the mapping of CLI flags to depth-pruning
configs is this package's business.
"""

from __future__ import annotations

from typing import Any

from netslim.errors import ConfigError
from netslim.layers.config import Gates, Layers

# the job settings (``netslim prune`` flags) each method reads; others are refused
FLAGS = {
    "layer": frozenset({"ratio", "remove", "criterion"}),
    "gate": frozenset({"target_open", "per_input"}),
}


def layers_config(settings: Any, ratio: float) -> Layers | Gates:
    """``--method layer``: ``--remove N`` wins over ``--ratio``; ``--criterion`` picks the score.
    ``--method gate``: ``--epochs`` trains weights and gates jointly toward ``--target-open``;
    ``--per-input`` learns a per-sample gating head instead of one static gate per block."""
    if settings.schedule != "oneshot":
        raise ConfigError(f"--method {settings.method} runs one-shot (no --schedule)")
    if settings.method == "layer":
        remove = getattr(settings, "remove", None)
        return Layers(
            remove=remove,
            ratio=None if remove is not None else ratio,
            criterion=settings.criterion or "block-influence",
        )
    return Gates(
        target_open=getattr(settings, "target_open", None),
        epochs=settings.epochs,
        lr=settings.lr,
        per_input=bool(getattr(settings, "per_input", False)),
    )
