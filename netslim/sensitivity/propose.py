"""Per-module ratios for a MACs target from a sensitivity scan: greedy, cheapest accuracy loss
per MAC saved first, with the exact MACs of every candidate allocation from the engine's cost
model (no pruning needed)."""

from __future__ import annotations

from typing import Any

from torch import nn

from netslim.errors import ConfigError
from netslim.structural.allocation import local_counts
from netslim.structural.config import Channels
from netslim.structural.cost import count_macs
from netslim.structural.engine import candidates
from netslim.structural.groups import analyze


def propose_ratios(
    model: nn.Module,
    example_inputs: Any,
    scan: dict[str, Any],
    target_macs: float,
    *,
    round_to: int = 1,
    ignore: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``{"per_module": {module: ratio}, "macs_fraction", "predicted_drop"}`` keeping about
    ``target_macs`` of the original MACs; the drop is the sum of the per-unit drops (additive
    estimate). A target the scanned ratios cannot reach gets the deepest proposal and a
    ``note`` saying so."""
    if not 0.0 < target_macs <= 1.0:
        raise ConfigError(f"target_macs must be a fraction in (0, 1], got {target_macs}")
    if not isinstance(example_inputs, (tuple, dict)):
        example_inputs = (example_inputs,)
    analysis = analyze(model, example_inputs)
    by_module: dict[str, list] = {}
    for g in candidates(analysis, Channels(ignore=ignore)):
        by_module.setdefault(g.members[0].module, []).append(g)
    ratios = [0.0, *scan["ratios"]]
    drops = {
        u["module"]: [0.0] + [max(scan["baseline"] - a, 0.0) for a in u["accuracy"]]
        for u in scan["units"]
        if u["module"] in by_module
    }
    level = dict.fromkeys(drops, 0)
    base = count_macs(analysis)

    def macs(levels: dict[str, int]) -> int:
        kept = {}
        for mod, lv in levels.items():
            for g in by_module[mod]:
                c = local_counts({g.id: g.size}, {g.id: ratios[lv]}, round_to)
                kept[g.leaf] = c[g.id]
        return count_macs(analysis, kept)

    current = macs(level)
    while current > target_macs * base:
        best = None
        for mod, lv in level.items():
            if lv + 1 >= len(ratios):
                continue
            trial = level | {mod: lv + 1}
            saved = current - (m := macs(trial))
            if saved <= 0:
                continue
            cost = (drops[mod][lv + 1] - drops[mod][lv]) + 1e-6
            if best is None or cost / saved < best[0]:
                best = (cost / saved, mod, m)
        if best is None:
            break
        level[best[1]] += 1
        current = best[2]
    proposal = {
        "per_module": {mod: ratios[lv] for mod, lv in level.items()},
        "target_macs": target_macs,
        "macs_fraction": current / max(base, 1),
        "predicted_drop": sum(drops[m][lv] for m, lv in level.items()),
    }
    if current > target_macs * base:
        proposal["note"] = (
            f"target_macs {target_macs:g} is out of reach of the scanned ratios: with every unit "
            f"at its largest ({ratios[-1]:g}) the proposal keeps {proposal['macs_fraction']:.3f} "
            "of MACs; scan larger ratios to go further"
        )
    return proposal
