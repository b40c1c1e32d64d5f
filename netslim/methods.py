"""The method table: every pruning method netslim ships, by name.

One row per ``netslim prune --method`` name (and ``llm``): the loader of the method package's
:class:`~netslim.core.registry.MethodSpec` (config class -> handler, history kind -> replay,
job settings -> config) and the history kinds it replays. ``prune_``, ``netslim.load`` and the
prune job look methods up here and nowhere else. Packages load on first use, so
``import netslim`` stays cheap and loading a masks-only model never imports the structural
engine.

Floor: above the method packages, below ``netslim.jobs``; importing it registers the built-in
history replays with ``netslim.io`` (``netslim/__init__`` imports it through ``netslim.api``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from netslim.core.registry import Handler, MethodSpec, Replayer, extension_for, extension_names
from netslim.errors import ConfigError
from netslim.io.replay import register_replayer


def _unstructured() -> MethodSpec:
    from netslim.unstructured.method import METHOD

    return METHOD


def _structural() -> MethodSpec:
    from netslim.structural.method import METHOD

    return METHOD


def _layers() -> MethodSpec:
    from netslim.layers.method import METHOD

    return METHOD


def _llm() -> MethodSpec:
    from netslim.llm.method import METHOD

    return METHOD


@dataclass(frozen=True)
class Method:
    """One row: ``name`` as ``netslim prune --method`` spells it."""

    name: str
    load: Callable[[], MethodSpec]
    replays: tuple[str, ...] = ()  # history kinds whose replay this package owns
    job: bool = True  # offered by ``netslim prune --method``


TABLE: tuple[Method, ...] = (
    Method("unstructured", _unstructured, replays=("masks", "fold")),
    Method("channel", _structural, replays=("structural",)),
    Method("slimming", _structural),
    Method("layer", _layers, replays=("layers", "gates")),
    Method("gate", _layers),
    Method("llm", _llm, job=False),
)
JOB_METHODS: tuple[str, ...] = tuple(m.name for m in TABLE if m.job)


def _replay_quantize(model: nn.Module, record: dict[str, Any]) -> None:
    from netslim.quantize.dynamic import replay_quantize

    replay_quantize(model, record)


def _replay_compact(model: nn.Module, record: dict[str, Any]) -> None:
    from netslim.structural.compact import replay_compact

    replay_compact(model, record)


# Transforms that are not ``prune_`` methods but leave history records all the same.
OTHER_REPLAYS: dict[str, Replayer] = {"quantize": _replay_quantize, "compact": _replay_compact}


def _loaded_replay(load: Callable[[], MethodSpec], kind: str) -> Replayer:
    def replay(model: nn.Module, record: dict[str, Any]) -> None:
        load().replays[kind](model, record)

    return replay


for _method in TABLE:
    for _kind in _method.replays:
        register_replayer(_kind, _loaded_replay(_method.load, _kind))
for _kind, _replay in OTHER_REPLAYS.items():
    register_replayer(_kind, _replay)


def method(name: str) -> Method:
    for row in TABLE:
        if row.name == name:
            return row
    raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(JOB_METHODS)}")


def config_from_settings(settings: Any, ratio: float) -> Any:
    """The config of ``settings.method`` for one pruning step (the method's own flag mapping)."""
    return config_and_handler(settings, ratio)[0]


def config_and_handler(settings: Any, ratio: float) -> tuple[Any, Handler]:
    """The config of ``settings.method`` for one pruning step and the handler that runs it."""
    spec = method(settings.method).load()
    if spec.from_settings is None:
        raise ConfigError(f"method {settings.method!r} has no job settings")
    config = spec.from_settings(settings, ratio)
    return config, spec.handlers[type(config)]


def preflight(method_name: str, model: nn.Module, config: Any, example_inputs: Any) -> None:
    """The checks of ``config`` against ``model`` that its method would make only when it
    prunes (a module name the model lacks, more blocks than it has, an N:M that does not
    divide): jobs run them before training, so bad input costs no work."""
    checks = method(method_name).load().preflight
    for cls in type(config).__mro__:
        if cls in checks:
            checks[cls](model, config, example_inputs)
            return


def handler_for(config: Any) -> Handler:
    """The handler of ``config``'s class (or of a base class): a registered extension, else the
    table's, loading packages in table order until one handles it."""
    handler = extension_for(config)
    if handler is not None:
        return handler
    names = extension_names()
    for load in dict.fromkeys(row.load for row in TABLE):
        try:
            spec = load()
        except ModuleNotFoundError:  # an optional extra is missing: that method is not here
            continue
        for cls in type(config).__mro__:
            if cls in spec.handlers:
                return spec.handlers[cls]
        names += [c.__name__ for c in spec.handlers]
    raise ConfigError(
        f"no pruning method for config {type(config).__name__!r} (known: {', '.join(sorted(names))})"
    )


def settings_read_by(name: str) -> frozenset[str]:
    """The job settings ``--method name`` reads beyond the job-level ones (its package says)."""
    return method(name).load().flags.get(name, frozenset())


def methods_reading(setting: str) -> list[str]:
    """The job methods that read ``setting`` (for error messages)."""
    return [name for name in JOB_METHODS if setting in settings_read_by(name)]
