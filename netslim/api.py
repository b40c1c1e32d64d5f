"""The public verbs: ``prune_`` (in place, one config object per method; ``prune_consistently_``
under torchrun), ``save`` and ``load``.

``prune_`` only dispatches: the method table (``netslim.methods``) holds each method's handler
for its config class, so adding a method never touches this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any

import torch
from torch import nn

from netslim.core.registry import Handler, PruneContext
from netslim.errors import ConfigError, NetslimError
from netslim.io import load, save
from netslim.methods import config_and_handler, handler_for
from netslim.models.spec import build_model


def prune_(
    model: nn.Module,
    config: Any,
    *,
    example_inputs: Any = None,
    train_loader: Any = None,
    test_loader: Any = None,
    **extras: Any,
) -> dict[str, Any]:
    """Prune ``model`` in place as ``config`` says and return a summary of what changed.

    ``example_inputs`` (a tensor or tuple) is needed by methods that trace the model (structural
    pruning, MACs targets); data loaders by criteria or schedules that use data. Given
    calibration batches (``train_loader=``), ``Channels`` and ``Unstructured`` also refit the
    pruned layers unless their ``reconstruct=False`` (the auto default that ``netslim prune
    --data`` uses: ``netslim.reconstruct.auto_reconstruct``). ``loss=fn(model, batch) -> scalar``
    (or ``calibration=Calibration(loader, loss=fn)``) replaces cross-entropy wherever a method
    reads data (data-driven criteria, block ablation, gate training), so batches need no labels.
    """
    return _run(
        handler_for(config), model, config, example_inputs, train_loader, test_loader, extras
    )


def _run(
    handler: Handler,
    model: nn.Module,
    config: Any,
    example_inputs: Any = None,
    train_loader: Any = None,
    test_loader: Any = None,
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"prune_ expects an nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    elif example_inputs is not None and not isinstance(example_inputs, dict):
        example_inputs = tuple(example_inputs)  # a dict holds keyword inputs (Hugging Face)
    context = PruneContext(
        example_inputs=example_inputs,
        train_loader=train_loader,
        test_loader=test_loader,
        extras=extras or {},
    )
    return handler(model, config, context)


def prune_consistently_(model: nn.Module, config: Any, **kwargs: Any) -> dict[str, Any]:
    """``prune_`` on every rank under torchrun, then rank 0's masks everywhere, then a check.

    The config must be equal on every rank (ConfigError otherwise). Unstructured masks are
    computed on every rank from identical weights and then overwritten with rank 0's, so float
    ties cannot split the ranks. Structural plans change shapes: they must be deterministic
    (criteria seeded from the config), and ``verify_consistent`` proves every rank removed
    the same channels before training goes on.
    """
    return _consistently(handler_for(config), model, config, **kwargs)


def prune_step_(model: nn.Module, settings: Any, ratio: float, **kwargs: Any) -> dict[str, Any]:
    """One pruning step of a job (``netslim.jobs.pipeline``): the method table turns the job's
    settings and this step's ``ratio`` into the method's config and handler, which run as
    :func:`prune_consistently_` runs them. One call down, so a setting passes each file once."""
    config, handler = config_and_handler(settings, ratio)
    return _consistently(handler, model, config, **kwargs)


def _consistently(handler: Handler, model: nn.Module, config: Any, **kwargs: Any) -> dict[str, Any]:
    from netslim.distributed import (
        broadcast_masks_,
        broadcast_state_,
        verify_consistent,
        verify_same,
    )

    described = asdict(config) if is_dataclass(config) else repr(config)
    verify_same(json.loads(json.dumps(described, default=str)), f"{type(config).__name__} settings")
    example_inputs = kwargs.pop("example_inputs", None)
    train_loader = kwargs.pop("train_loader", None)
    test_loader = kwargs.pop("test_loader", None)
    args = (handler, model, config, example_inputs, train_loader, test_loader, kwargs)
    if getattr(config, "time_target", False):  # timed, not derived: rank 0 plans for all
        summary = _planned_on_rank_0(model, lambda: _run(*args))
        verify_consistent(model, what=f"{type(config).__name__} pruning step")
        return summary
    summary = _run(*args)
    broadcast_masks_(model)
    # refitted on each rank's own batches; an auto (None) config resolves inside the handler,
    # whose summary then carries the reconstruction report
    if getattr(config, "reconstruct", False) or "reconstruction" in summary:
        broadcast_state_(model)
    verify_consistent(model, what=f"{type(config).__name__} pruning step")
    return summary


def _planned_on_rank_0(model: nn.Module, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``step`` on rank 0 alone and replay the history it recorded on the other ranks,
    then give them rank 0's weights: a time target's widths come from timings, which differ
    between ranks (each rank planned its own widths, and the job stopped with "ranks were
    started with different model state layout"). An error on rank 0 is raised on every rank."""
    from netslim.core.history import get_history, set_history
    from netslim.distributed import broadcast_object, broadcast_state_, is_main
    from netslim.io.replay import replay

    before = get_history(model)
    outcome = None
    if is_main():
        try:
            outcome = (step(), get_history(model)[len(before) :], None)
        except NetslimError as exc:
            outcome = (None, None, exc)
    summary, steps, error = broadcast_object(outcome)
    if error is not None:
        raise error
    if not is_main():
        replay(model, steps)
        set_history(model, before + steps)
    broadcast_state_(model)  # rank 0's refitted weights and statistics
    return summary


__all__ = ["build_model", "load", "prune_", "prune_consistently_", "prune_step_", "save"]
