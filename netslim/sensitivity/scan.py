"""Prune one unit (the channel groups produced by one module) at a time and measure.

A unit is keyed by the module of its group's first member (its producer), the key
``Channels(per_module=...)`` matches first; every other unit is pinned at ratio 0 so pruning a
unit never reaches its neighbours through shared consumer columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from netslim.core.copying import copy_model
from netslim.errors import ConfigError
from netslim.importance import Calibration
from netslim.structural.config import Channels
from netslim.structural.engine import candidates, prune
from netslim.structural.groups import analyze

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def units(model: nn.Module, example_inputs: Any, config: Channels) -> dict[str, list[str]]:
    """Unit key (producer module) -> ids of the candidate groups it owns."""
    analysis = analyze(model, example_inputs)
    out: dict[str, list[str]] = {}
    for g in candidates(analysis, config):
        out.setdefault(g.members[0].module, []).append(g.id)
    return out


def check_ratios(ratios: Sequence[float]) -> list[float]:
    """The ratios a scan prunes each unit at, as floats: at least one, each in (0, 1)."""
    ratios = [float(r) for r in ratios]
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ConfigError(f"sensitivity ratios must be in (0, 1), got {ratios}")
    return ratios


def scan_sensitivity(
    model: nn.Module,
    example_inputs: Any,
    evaluate: Callable[[nn.Module], float],
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    criterion: str = "l2",
    ignore: Sequence[str] = (),
    calibration: Calibration | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``{"baseline", "ratios", "macs", "units": [{"module", "groups", "accuracy", "macs"}]}``;
    ``evaluate(model) -> accuracy`` runs on a pruned copy, ``model`` is left unchanged."""
    ratios = check_ratios(ratios)
    if not isinstance(example_inputs, (tuple, dict)):
        example_inputs = (example_inputs,)
    base_config = Channels(criterion=criterion, ignore=tuple(ignore))
    found = units(model, example_inputs, base_config)
    if not found:
        raise ConfigError("no prunable channel groups: nothing to analyse")
    rows = []
    baseline = float(evaluate(model))
    base_macs = None
    started = time.perf_counter()
    for index, (key, gids) in enumerate(found.items()):
        accs, macs = [], []
        for r in ratios:
            per = dict.fromkeys(found, 0.0) | {key: r}
            trial = copy_model(model)
            config = Channels(ratio=0.0, criterion=criterion, ignore=tuple(ignore), per_module=per)
            _, report = prune(trial, example_inputs, config, calibration)
            base_macs = report["macs"]["before"]
            accs.append(float(evaluate(trial)))
            macs.append(report["macs"]["after"])
        rows.append({"module": key, "groups": gids, "accuracy": accs, "macs": macs})
        if log:  # progress only: the table of accuracies is printed once, at the end
            seconds = time.perf_counter() - started
            log(f"unit {index + 1}/{len(found)} scanned ({key}), {seconds:.0f} s")
    return {"baseline": baseline, "ratios": ratios, "macs": base_macs, "units": rows}
