"""History replay: turn a freshly built original model into the pruned one's shape.

Each history ``kind`` maps to a function ``replay(model, record)``. Built-in kinds are resolved
lazily by import path so that loading a masks-only model never imports the structural engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from netslim.errors import ArtifactError

Replayer = Callable[[nn.Module, dict[str, Any]], None]

_BUILTIN: dict[str, str] = {
    "masks": "netslim.unstructured.method:replay_masks",
    "structural": "netslim.structural.method:replay_plan",
    "layers": "netslim.layers.method:replay_layers",
    "gates": "netslim.layers.method:replay_gates",
    "quantize": "netslim.quantize.dynamic:replay_quantize",
    "compact": "netslim.structural.compact:replay_compact",
}
_REGISTERED: dict[str, Replayer] = {}


def register_replayer(kind: str, fn: Replayer) -> None:
    """Extension point: teach ``netslim.load`` to replay a new kind of history record."""
    _REGISTERED[kind] = fn


def replayer_for(kind: str) -> Replayer:
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    if kind not in _BUILTIN:
        known = ", ".join(sorted({*_BUILTIN, *_REGISTERED}))
        raise ArtifactError(f"saved history has unknown step kind {kind!r} (known: {known})")
    module_name, _, attr = _BUILTIN[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def replay(model: nn.Module, history: list[dict[str, Any]]) -> None:
    for index, step in enumerate(history):
        if not isinstance(step, dict) or "kind" not in step:
            raise ArtifactError(f"history step {index} is malformed: {step!r:.80}")
        replayer_for(step["kind"])(model, step)
