"""What was done to a model, in order, as JSON-serialisable records.

``netslim.save`` stores this list beside the weights; ``netslim.load`` rebuilds the original
model from its spec and replays each record (structural plans change shapes, mask records
re-attach parametrizations) before loading the weights. Keeping the history on the module
itself means it travels with the model through user code without extra bookkeeping.
"""

from __future__ import annotations

from typing import Any

from torch import nn

_SPEC_ATTR = "_netslim_spec"
_HISTORY_ATTR = "_netslim_history"


def set_spec(model: nn.Module, spec: dict[str, Any]) -> None:
    """Remember how to rebuild the unpruned model (e.g. ``{"source": "zoo:lenet300"}``)."""
    object.__setattr__(model, _SPEC_ATTR, dict(spec))


def get_spec(model: nn.Module) -> dict[str, Any] | None:
    return getattr(model, _SPEC_ATTR, None)


def record(model: nn.Module, kind: str, payload: dict[str, Any]) -> None:
    """Append one transform record; ``kind`` selects the replayer used by ``netslim.load``."""
    history = list(getattr(model, _HISTORY_ATTR, []))
    history.append({"kind": kind, **payload})
    object.__setattr__(model, _HISTORY_ATTR, history)


def get_history(model: nn.Module) -> list[dict[str, Any]]:
    return list(getattr(model, _HISTORY_ATTR, []))


def set_history(model: nn.Module, history: list[dict[str, Any]]) -> None:
    object.__setattr__(model, _HISTORY_ATTR, list(history))
