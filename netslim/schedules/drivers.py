"""Schedules as drivers: they own the prune/train interleaving, the caller owns training.

``finetune(model)`` and ``train_fn(model, on_step)`` are plain callables, so any trainer (netslim's
or the user's) fits; whatever they return is kept in the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from torch import nn

from netslim.errors import ConfigError
from netslim.schedules._checks import check_callable
from netslim.schedules.agp import AGPScheduler
from netslim.schedules.iterative import iterative_ratios
from netslim.unstructured.config import Unstructured
from netslim.unstructured.method import prune, summarize

Finetune = Callable[[nn.Module], Any]
TrainFn = Callable[[nn.Module, Callable[..., Any]], Any]


def _check_config(config: Any) -> None:
    if not isinstance(config, Unstructured):
        raise ConfigError(f"schedules drive Unstructured pruning, got {type(config).__name__}")


def run_oneshot(
    model: nn.Module, config: Unstructured, finetune: Finetune | None = None
) -> dict[str, Any]:
    """Prune once to ``config.ratio``, then ``finetune(model)`` (if given)."""
    _check_config(config)
    check_callable("finetune", finetune, optional=True)
    result = prune(model, config)
    result["finetune"] = finetune(model) if finetune is not None else None
    return result


def run_iterative(
    model: nn.Module,
    config: Unstructured,
    rounds: int,
    finetune: Finetune | None = None,
    *,
    mode: Literal["geometric", "linear"] = "geometric",
) -> dict[str, Any]:
    """``rounds`` × (prune to the next of ``iterative_ratios(config.ratio, rounds)``, fine-tune)."""
    _check_config(config)
    check_callable("finetune", finetune, optional=True)
    if config.nm is not None:
        raise ConfigError("N:M sparsity is reached in one step; use run_oneshot")
    ratios = iterative_ratios(config.ratio, rounds, mode=mode)
    history = []
    for index, ratio in enumerate(ratios):
        summary = prune(model, replace(config, ratio=ratio))
        trained = finetune(model) if finetune is not None else None
        history.append(
            {
                "round": index + 1,
                "ratio": ratio,
                "sparsity": summary["sparsity"],
                "finetune": trained,
            }
        )
    return {**summarize(model, config), "rounds": history}


def run_agp(
    model: nn.Module,
    config: Unstructured,
    train_fn: TrainFn,
    *,
    total_steps: int,
    update_every: int | None = None,
    s_init: float = 0.0,
    start_step: int = 0,
    end_step: int | None = None,
) -> dict[str, Any]:
    """Train with ``train_fn(model, on_step)`` while an :class:`AGPScheduler` raises sparsity to
    ``config.ratio``; the model is masked at ``s_init`` before ``train_fn`` starts (when
    ``s_init > 0``), and the final sparsity is applied at the end if training stopped short."""
    _check_config(config)
    check_callable("train_fn", train_fn)
    scheduler = AGPScheduler(
        model,
        config,
        total_steps,
        update_every,
        s_init=s_init,
        start_step=start_step,
        end_step=end_step,
    )
    scheduler.start()
    trained = train_fn(model, scheduler.on_step)
    scheduler.finish()
    return {**summarize(model, config), "updates": scheduler.updates, "train": trained}
