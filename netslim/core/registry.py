"""What a pruning method is, as the method table (``netslim.methods``) sees it.

Each method package declares one :class:`MethodSpec` in its ``method`` module: a handler
``handler(model, config, context)`` per config class, the history kinds it replays, the mapping
of job settings (``netslim prune`` flags) to its config, and per config class the checks against
a model that can run before any work (``preflight``). The table imports these specs;
``prune_``, ``netslim.load`` and the prune job read only the table.

:func:`register_method` stays as the extension point for methods outside netslim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn


@dataclass
class PruneContext:
    """What a method may need beyond the model: example inputs, data, and a training budget."""

    example_inputs: tuple[Any, ...] | None = None
    train_loader: Any = None
    test_loader: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[nn.Module, Any, PruneContext], dict[str, Any]]
Replayer = Callable[[nn.Module, dict[str, Any]], None]
# job settings (``netslim.jobs.settings.JobSettings``) and the ratio of this step -> a config
FromSettings = Callable[[Any, float], Any]
# (model, config, example inputs) -> None, or a ConfigError: the model-dependent checks of the
# handler that are cheap (module names, block counts, N:M fit), run before any training
Preflight = Callable[[nn.Module, Any, Any], None]


@dataclass(frozen=True)
class MethodSpec:
    """One method package's entry in the method table."""

    handlers: Mapping[type, Handler]
    replays: Mapping[str, Replayer] = field(default_factory=dict)
    from_settings: FromSettings | None = None
    # method name -> the job settings (``netslim prune`` flags) that method reads beyond the
    # job-level ones; any other method setting given to it is an error naming the method
    flags: Mapping[str, frozenset[str]] = field(default_factory=dict)
    preflight: Mapping[type, Preflight] = field(default_factory=dict)


F = TypeVar("F", bound=Callable[..., Any])


def filed_under(table: dict[Any, Any], *keys: Any) -> Callable[[F], F]:
    """A decorator that files the function in ``table`` under each of ``keys`` and returns it
    unchanged: the one shape of netslim's extension points (methods, op rules, module rules,
    attribute updaters)."""

    def wrap(fn: F) -> F:
        for key in keys:
            table[key] = fn
        return fn

    return wrap


_EXTENSIONS: dict[type, Handler] = {}


def register_method(config_type: type) -> Callable[[Handler], Handler]:
    """Decorator for methods outside netslim: ``@register_method(MyConfig) def _prune(...)``."""
    return filed_under(_EXTENSIONS, config_type)


def extension_for(config: Any) -> Handler | None:
    for cls in type(config).__mro__:
        if cls in _EXTENSIONS:
            return _EXTENSIONS[cls]
    return None


def extension_names() -> list[str]:
    return [c.__name__ for c in _EXTENSIONS]
