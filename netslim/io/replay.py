"""History replay: turn a freshly built original model into the pruned one's shape.

Each history ``kind`` maps to a function ``replay(model, record)``. The built-in kinds are
registered by the method table (``netslim.methods``, imported with ``netslim``), which loads a
method package only when its kind is replayed: loading a masks-only model never imports the
structural engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from netslim.errors import ArtifactError

Replayer = Callable[[nn.Module, dict[str, Any]], None]

_REGISTERED: dict[str, Replayer] = {}


def register_replayer(kind: str, fn: Replayer) -> None:
    """Teach ``netslim.load`` to replay a kind of history record (also the extension point)."""
    _REGISTERED[kind] = fn


def replayer_for(kind: str) -> Replayer:
    if kind not in _REGISTERED:
        known = ", ".join(sorted(_REGISTERED))
        raise ArtifactError(f"saved history has unknown step kind {kind!r} (known: {known})")
    return _REGISTERED[kind]


def replay(model: nn.Module, history: list[dict[str, Any]]) -> None:
    for index, step in enumerate(history):
        if not isinstance(step, dict) or not isinstance(step.get("kind"), str):
            raise ArtifactError(f"history step {index} is malformed: {step!r:.80}")
        replayer_for(step["kind"])(model, step)
