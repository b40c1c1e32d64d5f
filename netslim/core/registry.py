"""Config type → handler registry behind ``netslim.prune_``.

Each pruning method owns a config dataclass and a handler ``handler(model, config, context)``.
Registering keeps ``prune_`` a pure dispatcher: adding a method touches only its own package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from netslim.errors import ConfigError


@dataclass
class PruneContext:
    """What a method may need beyond the model: example inputs, data, and a training budget."""

    example_inputs: tuple[Any, ...] | None = None
    train_loader: Any = None
    test_loader: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[nn.Module, Any, PruneContext], dict[str, Any]]
_HANDLERS: dict[type, Handler] = {}


def register_method(config_type: type) -> Callable[[Handler], Handler]:
    """Decorator: ``@register_method(Unstructured) def _prune(model, cfg, ctx): ...``."""

    def wrap(fn: Handler) -> Handler:
        _HANDLERS[config_type] = fn
        return fn

    return wrap


def handler_for(config: Any) -> Handler:
    for cls in type(config).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    known = ", ".join(sorted(c.__name__ for c in _HANDLERS)) or "none registered"
    raise ConfigError(f"no pruning method for config {type(config).__name__!r} (known: {known})")
