"""Check a pruning against its promise: pruned output == masked original, to float tolerance."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from netslim.core.copying import copy_model
from netslim.structural.config import Channels
from netslim.structural.engine import prune
from netslim.structural.forward import run_model
from netslim.structural.graph import flatten_tensors
from netslim.structural.reference import masked_reference


def max_abs_diff(a: Any, b: Any) -> float:
    ta, tb = flatten_tensors(a), flatten_tensors(b)
    if len(ta) != len(tb):
        raise AssertionError(f"{len(ta)} outputs vs {len(tb)}")
    worst = 0.0
    for x, y in zip(ta, tb, strict=True):
        if x.shape != y.shape:
            raise AssertionError(f"output shape {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.is_floating_point():
            worst = max(worst, (x.double() - y.double()).abs().max().item() if x.numel() else 0.0)
        elif not torch.equal(x, y):
            worst = float("inf")
    return worst


def prune_and_compare(
    model: nn.Module, example_inputs: Any, config: Channels | None = None, check_inputs: Any = None
) -> tuple[float, Any, dict[str, Any]]:
    """Prune ``model`` in place; returns (max abs diff vs the masked original, plan, report)."""
    original = copy_model(model)
    plan, report = prune(model, example_inputs, config or Channels())
    reference = masked_reference(original, plan, example_inputs)
    inputs = check_inputs if check_inputs is not None else example_inputs
    model.eval()
    with torch.no_grad():
        got = run_model(model, inputs)
        want = run_model(reference, inputs)
    return max_abs_diff(got, want), plan, report
