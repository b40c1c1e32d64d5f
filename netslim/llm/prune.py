"""``prune_model``: validate everything first, then run one method over the blocks in memory."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from netslim.core.copying import copy_model
from netslim.errors import ConfigError, DataError
from netslim.llm.arch import Family, block_linears, family, layers, weight_oi
from netslim.llm.calibration import BlockInputs, calibration_summary, capture_inputs
from netslim.llm.config import WEIGHT_METHODS, LLMPrune
from netslim.llm.depth import (
    InfluenceStep,
    check_depth_supported,
    choose,
    removal_count,
    remove_blocks,
)
from netslim.llm.distill import cycle_batches, distill
from netslim.llm.methods import get_method
from netslim.llm.offsets import check_offsets
from netslim.llm.owl import plan_sparsities
from netslim.llm.sequential import ModelBlocks, WeightStep, run_sequential
from netslim.llm.width import (
    WidthStep,
    apply_width,
    check_width_supported,
    layer_widths,
    sync_config,
)


def needs_calibration(config: LLMPrune) -> bool:
    """Whether ``config`` reads calibration text: every method but magnitude scores from it,
    and whatever the method, OWL weighs weights by their inputs' norms on it and block
    reconstruction and recovery fit to the dense model on it."""
    if config.method in WEIGHT_METHODS:
        return bool(get_method(config.method)[1] or _data_knobs(config))
    return True  # width and depth score units from activations


def _data_knobs(config: LLMPrune) -> list[str]:
    """The per-weight knobs that read calibration text whatever the method scores from."""
    if config.method not in WEIGHT_METHODS:
        return []
    return [k for k in ("owl", "reconstruct", "recover") if getattr(config, k)]


def calibration_user(config: LLMPrune) -> str:
    """What needs the calibration text, for error messages."""
    knobs = _data_knobs(config)
    return f"method {config.method!r}" + (f" with {' and '.join(knobs)}" if knobs else "")


def check_nm_shapes(shapes: dict[str, tuple[int, int]], nm: tuple[int, int]) -> None:
    """Every ``(out, in)`` shape must split its input dimension into whole groups of M."""
    for name, (_, inp) in shapes.items():
        if inp % nm[1]:
            raise ConfigError(
                f"N:M {nm[0]}:{nm[1]} needs input widths divisible by {nm[1]}; {name} has {inp}"
            )


def check_calibration(calibration: Tensor | None, config: LLMPrune) -> None:
    if calibration is None:
        if needs_calibration(config):
            raise ConfigError(
                f"{calibration_user(config)} needs calibration token ids (N, seq_len)"
            )
        return
    if (
        not isinstance(calibration, Tensor)
        or calibration.dim() != 2
        or calibration.dtype
        not in (
            torch.long,
            torch.int32,
        )
    ):
        raise DataError("calibration must be an integer tensor of token ids shaped (N, seq_len)")
    if calibration.shape[0] < 1 or calibration.shape[1] < 2:
        raise DataError(
            f"calibration needs at least one sequence of >= 2 tokens, got {tuple(calibration.shape)}"
        )


def validate(model: nn.Module, config: LLMPrune, calibration: Tensor | None) -> Family:
    """All checks that can fail on user input, before anything changes."""
    fam = family(model)
    check_calibration(calibration, config)
    blocks = layers(model, fam)
    if config.nm is not None:
        shapes = {
            f"{fam.prefix}.{i}.{n}": tuple(weight_oi(m).shape)
            for i, b in enumerate(blocks)
            for n, m in block_linears(b).items()
        }
        check_nm_shapes(shapes, config.nm)
    check_offsets(config, blocks)
    if config.method == "width":
        check_width_supported(model)
        if config.layer_sparsity is not None and len(config.layer_sparsity) != len(blocks):
            raise ConfigError(
                f"layer_sparsity has {len(config.layer_sparsity)} entries, the model {len(blocks)} blocks"
            )
    if config.method == "depth":
        removal_count(config, len(blocks))
        check_depth_supported(model)
    return fam


KEEP_TARGETS_BYTES = 2 << 30
"""In memory, the OWL pass keeps every block's dense output for block reconstruction when they
fit in this many bytes (one forward of each dense block saved); beyond it they are recomputed
block by block, so memory stays that of one block's activations."""


def keep_targets(config: LLMPrune, inputs: BlockInputs | None, source: ModelBlocks) -> bool:
    """Whether the OWL pass should keep the dense outputs as reconstruction targets."""
    if inputs is None or not (config.owl and config.reconstruct):
        return False
    per_block = inputs.hidden.numel() * 4  # targets are float32
    return per_block * len(source) <= KEEP_TARGETS_BYTES


def weight_step_report(step: WeightStep, owl: dict[str, Any]) -> dict[str, Any]:
    """What each part of a per-weight run cost (seconds) and, when on, OWL's and the block
    reconstruction's own figures."""
    out: dict[str, Any] = {"costs": {k: v for k, v in step.costs.items() if v}}
    if owl:
        out["costs"]["owl"] = owl["seconds"]
        out["owl"] = owl
    if step.fit:
        out["reconstruction"] = {
            "first_loss": [f["first_loss"] for f in step.fit],
            "last_loss": [f["last_loss"] for f in step.fit],
        }
    return out


def pruned_masks(model: nn.Module) -> dict[nn.Parameter, Tensor]:
    """Keep-masks (weight != 0) of every block linear: what per-weight pruning left."""
    return {
        m.weight: m.weight.detach() != 0
        for block in layers(model)
        for m in block_linears(block).values()
    }


def sparsity_of(model: nn.Module) -> float:
    """Fraction of exact zeros over all block linears."""
    zeros = total = 0
    for block in layers(model):
        for m in block_linears(block).values():
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return zeros / max(total, 1)


def count_params(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # tied embeddings counted once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@torch.no_grad()
def prune_model(
    model: nn.Module,
    config: LLMPrune,
    calibration: Tensor | None = None,
    recovery: Tensor | None = None,
) -> dict[str, Any]:
    """Prune ``model`` in place, block by block, and return a JSON-ready report.

    ``calibration``: ``(N, seq_len)`` token ids (see ``calibration.token_sequences``); not used
    by magnitude. ``recovery``: token ids for ``config.recover`` distillation steps (default:
    the calibration ids). All-or-nothing: on any failure the model is restored.
    """
    fam = validate(model, config, calibration)
    config = config.resolved(streaming=False)
    if recovery is not None:
        check_calibration(recovery, config)
    teacher = copy_model(model) if config.recover else None
    model.eval()
    start = time.perf_counter()
    before = {"params": count_params(model), "blocks": len(layers(model, fam))}
    source = ModelBlocks(model)
    report: dict[str, Any] = {
        "method": config.method,
        "config": config.to_dict(),
        "family": fam.name,
    }
    if calibration is not None and needs_calibration(config):
        report["calibration"] = calibration_summary(calibration)
    try:
        inputs = capture_inputs(model, calibration) if "calibration" in report else None
        if config.method in WEIGHT_METHODS:
            plan = plan_sparsities(source, inputs, config, keep_targets(config, inputs, source))
            step = WeightStep(config, plan.sparsities, plan.dense_outputs)
            run_sequential(source, inputs, step)
            report.update(weight_step_report(step, plan.info))
        elif config.method == "width":
            step = WidthStep(config, model.config)
            run_sequential(source, inputs, step)
            report["engine"] = apply_width(model, step, calibration[:1])
            report["config_updated"] = sync_config(model)
            report["widths"] = layer_widths(model)
        else:
            step = InfluenceStep()
            run_sequential(source, inputs, step)
            removed = choose(step.influence, removal_count(config, len(step.influence)))
            remove_blocks(model, removed)
            report["block_influence"] = step.influence
            report["removed_blocks"] = removed
        if teacher is not None:
            assert calibration is not None
            ids = calibration if recovery is None else recovery
            batches = cycle_batches(ids, config.recover_batch, seed=config.seed)
            report["recovery"] = distill(
                model, teacher, batches, steps=config.recover, lr=config.recover_lr,
                masks=pruned_masks(model) if config.method in WEIGHT_METHODS else None,
                train_dtype=config.train_dtype,
            )  # fmt: skip
            report.setdefault("costs", {})["recover"] = report["recovery"]["seconds"]
    except BaseException:
        source.rollback()
        if teacher is not None:  # blocks may be gone or reshaped: put the original back whole
            model.__dict__.clear()
            model.__dict__.update(teacher.__dict__)
        raise
    source.commit()
    report["sparsity"] = sparsity_of(model)
    report["params"] = {"before": before["params"], "after": count_params(model)}
    report["blocks"] = {"before": before["blocks"], "after": len(layers(model, fam))}
    report["loader"] = loader_for(model)
    report["seconds"] = time.perf_counter() - start
    return report


def loader_for(model: nn.Module) -> str:
    """``transformers`` when the config describes every tensor shape, else ``netslim``."""
    fam = family(model)
    if not fam.llama_like:
        return "transformers"
    widths = layer_widths(model)
    cfg = model.config
    uniform = all(w == widths[0] for w in widths) and all(
        getattr(cfg, k) == v for k, v in widths[0].items()
    )
    return "transformers" if uniform else "netslim"
