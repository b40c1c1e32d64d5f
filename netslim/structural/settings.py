"""``netslim prune --method channel|slimming`` settings -> :class:`Channels` (this package's entry
in the method table maps the job's flags to its config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netslim.errors import ConfigError
from netslim.structural.config import Channels


def load_per_module(path: str | None) -> dict[str, float]:
    """``--per-module FILE``: a JSON ``{module: ratio}`` (``netslim sensitivity`` writes one)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--per-module {path}: cannot read a JSON object: {exc}") from None
    data = data.get("per_module", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) for k, v in data.items()
    ):
        raise ConfigError(f"--per-module {path}: expected {{module name: ratio}}")
    return {k: float(v) for k, v in data.items()}


_CHANNEL_FLAGS = frozenset(
    {"ratio", "criterion", "target_macs", "target_latency_ms", "per_module", "round_to"}
    | {"ignore", "freeze", "l1_reg", "rounds", "target_speedup", "runtime", "threads", "batch"}
    | {"reconstruct", "blocks"}
)
# the job settings (``netslim prune`` flags) each method reads; others are refused
FLAGS = {
    "channel": _CHANNEL_FLAGS | {"scope"},
    "slimming": _CHANNEL_FLAGS | {"l1_warmup"},  # always global: no --scope
}
SCOPES = ("global", "local")


def channels_config(settings: Any, ratio: float) -> Channels:
    """``slimming`` is channel pruning ranked by BN scales (``bn``), always global."""
    slimming = settings.method == "slimming"
    if settings.scope not in SCOPES:
        raise ConfigError(
            f"--scope {settings.scope!r} is not a scope of --method {settings.method}: "
            f"choose one of {', '.join(SCOPES)}"
        )
    return Channels(
        ratio=ratio,
        criterion=settings.criterion or ("bn" if slimming else "l2"),
        target_macs=settings.target_macs,
        target_latency_ms=settings.target_latency_ms,
        target_speedup=settings.target_speedup,
        runtime=settings.runtime,
        threads=settings.threads,
        batch=settings.batch,
        scope="global" if settings.scope == "global" or slimming else "local",
        per_module=load_per_module(settings.per_module),
        ignore=tuple(settings.ignore),
        freeze=tuple(getattr(settings, "freeze", ())),
        round_to=settings.round_to,
        blocks=settings.blocks,
        seed=settings.seed,
        reconstruct=getattr(settings, "reconstruct", None),
    )
