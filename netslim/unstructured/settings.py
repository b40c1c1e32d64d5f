"""``netslim prune --method unstructured`` settings -> :class:`Unstructured` (this package's entry
in the method table maps the job's flags to its config)."""

from __future__ import annotations

from typing import Any

from netslim.errors import ConfigError
from netslim.unstructured.config import Unstructured


def parse_nm(text: str | None) -> tuple[int, int] | None:
    """``--nm 2:4`` -> ``(2, 4)``; empty -> ``None``."""
    if not text:
        return None
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"--nm must look like 2:4, got {text!r}") from None
    return n, m


# the job settings (``netslim prune`` flags) this method reads; others are refused
FLAGS = {
    "unstructured": frozenset(
        {"ratio", "scope", "criterion", "nm", "ignore", "l1_reg", "rounds", "keep_masks"}
        | {"reconstruct", "agp_start"}
    )
}


def unstructured_config(settings: Any, ratio: float) -> Unstructured:
    return Unstructured(
        ratio=ratio,
        scope=settings.scope,
        criterion=settings.criterion or "l1",
        nm=parse_nm(settings.nm),
        ignore=tuple(settings.ignore),
        seed=settings.seed,
        reconstruct=getattr(settings, "reconstruct", None),
    )
