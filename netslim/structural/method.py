"""``netslim.prune_(model, Channels(...), example_inputs=...)`` handler and history record."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from netslim.core import history
from netslim.core.copying import copy_model
from netslim.core.names import check_config_names
from netslim.core.registry import MethodSpec, PruneContext
from netslim.errors import ArtifactError, ConfigError
from netslim.importance import calibration_from
from netslim.reconstruct.policy import auto_reconstruct
from netslim.structural.config import Channels
from netslim.structural.engine import apply_plan, prune
from netslim.structural.graph import flatten_tensors
from netslim.structural.op_timing import Target, require_target
from netslim.structural.plan import PruningPlan
from netslim.structural.settings import FLAGS, channels_config

KIND = "structural"


def prune_channels(model: nn.Module, config: Channels, ctx: PruneContext) -> dict[str, Any]:
    inputs = ctx.example_inputs
    if inputs is None:
        raise ConfigError(
            "Channels pruning needs example inputs: pass example_inputs=(tensor, ...) shaped "
            "like one real batch"
        )
    if not isinstance(inputs, (tuple, dict)):
        inputs = (inputs,)
    calibration = calibration_from(ctx, config.calibration_batches)
    refit = auto_reconstruct(  # None: on with calibration batches (prune_ never fine-tunes)
        config.reconstruct,
        method_kind="channel",
        has_calibration=calibration is not None,
        finetunes_after=False,
    )
    if refit:
        plan, report = _prune_reconstructed(model, inputs, config, calibration)
    else:
        plan, report = prune(model, inputs, config, calibration)
    if config.time_target and plan.is_empty:  # already fast enough: nothing to record
        return report
    tensors = flatten_tensors(inputs)
    payload = {
        "plan": plan.to_dict(),
        "example_shapes": [list(t.shape) for t in tensors],
        "example_dtypes": [str(t.dtype).removeprefix("torch.") for t in tensors],
    }
    if isinstance(inputs, dict):
        payload["example_keys"] = list(inputs)
    history.record(model, KIND, payload)
    return report


def _prune_reconstructed(model: nn.Module, inputs: Any, config: Channels, calibration: Any):
    """Prune a copy, refit its consumers against ``model`` (the dense original), then apply the
    same plan to ``model`` and load the copy's values: a failure leaves ``model`` unchanged."""
    from netslim.reconstruct import calibration_batches, reconstruct, supported
    from netslim.training.optim_state import take_replacements

    batches = calibration_batches(model, calibration)
    work = copy_model(model)
    take_replacements(work)  # start from no pending swaps on the copy
    before = list(work.parameters())  # alive, so the swap notes can be read back
    plan, report = prune(work, inputs, config, calibration)
    if plan.is_empty:  # a latency target already met: nothing to prune or refit
        return plan, report
    chosen = {id(new[0]): new[1] for new in take_replacements(work).values() if new is not None}
    del before
    targets = {}
    for name, module in work.named_modules():
        sel = dict(chosen.get(id(getattr(module, "weight", None)), ()))
        if 1 in sel and supported(module):  # a consumer: it lost input channels
            targets[name] = (sel.get(0), None)
    report["reconstruction"] = reconstruct(work, model, targets, batches)
    apply_plan(model, plan, inputs)
    model.load_state_dict(work.state_dict())
    return plan, report


def example_inputs_from(record: dict[str, Any]) -> Any:
    """Stand-in inputs with the recorded shapes/dtypes: tracing needs shapes, not values."""
    gen = torch.Generator().manual_seed(0)
    out = []
    try:
        for shape, dtype in zip(record["example_shapes"], record["example_dtypes"], strict=True):
            dt = getattr(torch, dtype)
            if dt.is_floating_point:
                out.append(torch.randn(shape, generator=gen).to(dt))
            else:
                out.append(torch.zeros(shape, dtype=dt))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ArtifactError(f"structural history record has bad example inputs: {exc}") from exc
    keys = record.get("example_keys")
    return dict(zip(keys, out, strict=True)) if keys else tuple(out)


def replay_plan(model: nn.Module, record: dict[str, Any]) -> None:
    """``netslim.load``: reshape a freshly built original model exactly as the plan says."""
    plan = PruningPlan.from_dict(record["plan"])
    apply_plan(model, plan, example_inputs_from(record))


def _preflight(model: nn.Module, config: Channels, example_inputs: Any) -> None:
    """Module names, and a time target's runtime available here."""
    check_config_names(model, config)
    if config.time_target:
        require_target(Target(config.runtime, config.threads, config.batch or 1))


METHOD = MethodSpec(
    handlers={Channels: prune_channels},
    replays={KIND: replay_plan},
    from_settings=channels_config,
    flags=FLAGS,
    preflight={Channels: _preflight},
)
