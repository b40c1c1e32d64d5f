"""``netslim.prune_(model, LLMPrune(...), calibration=ids)`` handler."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from netslim.core.registry import MethodSpec, PruneContext
from netslim.llm.config import LLMPrune
from netslim.llm.prune import prune_model, validate


def prune_llm(model: nn.Module, config: LLMPrune, ctx: PruneContext) -> dict[str, Any]:
    """Calibration ids come as ``calibration=`` or as the single example input ``(N, seq_len)``;
    ``recovery=`` ids feed ``recover`` distillation (default: the calibration ids)."""
    calibration = ctx.extras.get("calibration")
    if calibration is None and ctx.example_inputs and isinstance(ctx.example_inputs[0], Tensor):
        calibration = ctx.example_inputs[0]
    return prune_model(model, config, calibration, ctx.extras.get("recovery"))


def _preflight(model: nn.Module, config: LLMPrune, calibration: Any) -> None:
    """Every check ``prune_model`` makes on user input (``validate``), with the calibration
    ids as the example inputs: the job runs it before its dense perplexity pass."""
    validate(model, config, calibration)


METHOD = MethodSpec(handlers={LLMPrune: prune_llm}, preflight={LLMPrune: _preflight})
