"""``netslim.prune_`` handlers for :class:`Layers` and :class:`Gates`, and their replayers.

Both handlers are all-or-nothing: everything that can fail on bad input (finding or naming
blocks, counts) is checked before the model changes, and a failure during gate training puts
the original weights and modules back.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from torch import nn

from netslim.core import history
from netslim.core.blocks import Block, _probe, resolve_blocks
from netslim.core.registry import MethodSpec, PruneContext
from netslim.core.removal import remove_blocks
from netslim.errors import ConfigError, NetslimWarning
from netslim.importance.blocks import choose, score_blocks
from netslim.importance.calibration import calibration_from, iter_batches
from netslim.layers.config import Gates, Layers
from netslim.layers.gates import (
    GatePenalty,
    attach_gates,
    bake_gates,
    detach_gates,
    gate_states,
)
from netslim.layers.settings import FLAGS, layers_config

LAYERS_KIND = "layers"


def _example(example_inputs: Any, train_loader: Any = None) -> Any:
    """What the block probe runs: the example inputs, else the first training batch."""
    if isinstance(example_inputs, dict):  # keyword inputs (Hugging Face)
        return example_inputs
    if example_inputs is not None:
        return example_inputs[0] if len(example_inputs) == 1 else example_inputs
    if train_loader is not None:
        for batch in train_loader:
            return batch
    raise ConfigError(
        "depth pruning needs example_inputs (or a train_loader) to find the removable blocks"
    )


def _open_target(config: Gates, blocks: list[Block]) -> int:
    """How many gates stay open: ``target_open``, or half the blocks."""
    target = config.target_open if config.target_open is not None else max(1, len(blocks) // 2)
    if target > len(blocks):
        raise ConfigError(
            f"target_open={config.target_open} but the model has only {len(blocks)} removable blocks"
        )
    return target


def _preflight(model: nn.Module, config: Layers | Gates, example_inputs: Any) -> None:
    """The blocks exist, and there are enough of them for ``remove`` / ``target_open``."""
    blocks = resolve_blocks(model, _example(example_inputs), config.blocks)
    if isinstance(config, Layers):
        config.count(len(blocks))
    else:
        _open_target(config, blocks)


def prune_layers(model: nn.Module, config: Layers, ctx: PruneContext) -> dict[str, Any]:
    """Score the candidate blocks, remove the ``count`` least important ones, record it."""
    example = _example(ctx.example_inputs, ctx.train_loader)
    blocks = resolve_blocks(model, example, config.blocks)
    count = config.count(len(blocks))
    calibration = calibration_from(ctx, config.calibration_batches)
    batches = list(iter_batches(model, calibration)) if calibration is not None else [example]
    loss = calibration.loss if calibration is not None else None
    scores = score_blocks(model, blocks, batches, config.criterion, loss) if count else []
    chosen = [blocks[i].name for i in choose(scores, count)] if count else []
    if chosen and calibration is None:
        warnings.warn(
            f"{config.criterion} scored the blocks on the example input alone (no data): "
            f"{', '.join(chosen)} were chosen by how the model treats that one input; pass data "
            "(train_loader= in Python, --data on the command line) to score them on real samples",
            NetslimWarning,
            stacklevel=2,
        )
    removed = remove_blocks(model, chosen)
    if removed:
        history.record(model, LAYERS_KIND, {"blocks": removed, "criterion": config.criterion})
    return {
        "method": "layers",
        "criterion": config.criterion,
        "candidates": [b.name for b in blocks],
        "scores": {b.name: round(s, 6) for b, s in zip(blocks, scores, strict=False)},
        "removed": removed,
        "blocks_before": len(blocks),
        "blocks_after": len(blocks) - len(removed),
    }


def _channels(model: nn.Module, blocks: list[Block], example: Any) -> list[int]:
    probe = _probe(model, example)
    out = []
    for block in blocks:
        shape = probe[block.name]["in"]
        out.append(int(shape[1] if len(shape) == 4 else shape[-1]))
    return out


def prune_gates(model: nn.Module, config: Gates, ctx: PruneContext) -> dict[str, Any]:
    """Attach gates, train weights and gates with the penalty, then bake (static gates)."""
    from netslim.training import train

    example = _example(ctx.example_inputs, ctx.train_loader)
    blocks = resolve_blocks(model, example, config.blocks)
    target = _open_target(config, blocks)
    if config.epochs and ctx.train_loader is None:
        raise ConfigError("gate training needs data: pass train_loader (CLI: --data)")
    channels = _channels(model, blocks, example) if config.per_input else None
    saved_state = copy.deepcopy(model.state_dict())
    saved_history = history.get_history(model)
    attach_gates(
        model,
        blocks,
        per_input=config.per_input,
        estimator=config.estimator,
        gate_scale=config.gate_scale,
        init_logit=config.init_logit,
        channels=channels,
    )
    losses = None
    try:
        if config.epochs:
            result = train(
                model,
                ctx.train_loader,
                epochs=config.epochs,
                lr=config.lr,
                regularizer=GatePenalty(config.penalty, target),
                progress=bool(ctx.extras.get("progress", False)),
                max_steps=config.max_steps,
                loss=ctx.extras.get("loss"),
            )
            losses = result.losses
    except BaseException:
        detach_gates(model)
        model.load_state_dict(saved_state)
        history.set_history(model, saved_history)
        raise
    summary: dict[str, Any] = {
        "method": "gates",
        "per_input": config.per_input,
        "target_open": target,
        "candidates": [b.name for b in blocks],
        "gates": gate_states(model),
        "final_loss": losses[-1] if losses else None,
    }
    if not config.per_input and config.bake:
        open_now = sum(1 for g in summary["gates"].values() if g["open"])
        removed = bake_gates(model, target)
        summary.update(
            removed=removed,
            open_after_training=open_now,
            blocks_after=len(blocks) - len(removed),
        )
    return summary


def replay_layers(model: nn.Module, record: dict[str, Any]) -> None:
    """``netslim.load``: remove the same blocks from the freshly built model."""
    remove_blocks(model, record["blocks"])


def replay_gates(model: nn.Module, record: dict[str, Any]) -> None:
    """``netslim.load``: wrap the same blocks in the same kind of gates (weights load after)."""
    blocks = [Block(*_split(name)) for name in record["blocks"]]
    attach_gates(
        model,
        blocks,
        per_input=record["per_input"],
        estimator=record["estimator"],
        gate_scale=record["gate_scale"],
        init_logit=record["init_logit"],
        channels=record.get("channels"),
        record=False,
    )
    history.record(model, "gates", {k: v for k, v in record.items() if k != "kind"})


def _split(name: str) -> tuple[str, int]:
    container, _, index = name.rpartition(".")
    return container, int(index)


METHOD = MethodSpec(
    handlers={Layers: prune_layers, Gates: prune_gates},
    replays={LAYERS_KIND: replay_layers, "gates": replay_gates},
    from_settings=layers_config,
    flags=FLAGS,
    preflight={Layers: _preflight, Gates: _preflight},
)
