"""How much speed-up per MACs reduction a latency plan could reach if it kept MACs, not
importance (issue #15's efficiency bars; a screen, not a bench: nothing here goes to docs/).

    python bench/_latency_efficiency_bound.py MODEL BATCH importance|macs|macs0

Plans ``MODEL`` (bench/latency.py's builder) at 2x and 3x speed-up targets, torch eager, one
thread, with the knapsack's value either the library's (``importance``) or the MACs each kept
channel carries (``macs``: the allocation that keeps the most MACs for the time; ``macs0``: the
same without the per-group floor), and prints the predicted and plan-time measured speed-up
over the MACs reduction. The MACs value is linearised per group (each group at full width in
the others), so ``macs`` is the best allocation this knapsack finds, not a proven ceiling.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency as bench  # noqa: E402

import netslim  # noqa: E402
from netslim.measure import count_macs  # noqa: E402
from netslim.structural import Channels, latency_alloc  # noqa: E402

ALLOCATE = latency_alloc.allocate


def channel_macs(model, x1) -> dict[str, float]:
    """MACs one channel of each prunable group carries, every other group at full width (the
    library's analytic count: the whole model's MACs minus those with that group one narrower)."""
    from netslim.structural.cost import count_macs as analytic_macs
    from netslim.structural.engine import candidates
    from netslim.structural.groups import analyze

    analysis = analyze(model, (x1,))
    full = analytic_macs(analysis)
    return {
        g.id: float(full - analytic_macs(analysis, {g.leaf: g.size - 1}))
        for g in candidates(analysis, Channels())
    }


def macs_valued(mode: str, per_channel: dict[str, float]):
    """``allocate`` with every group's value replaced by the MACs its kept channels carry."""

    def allocate(table, values, budget, **kwargs):
        values = {
            g: torch.arange(1, table.sizes[g] + 1, dtype=torch.float64) * per_channel[g]
            for g in values
        }
        if mode == "macs0":
            kwargs["min_fraction"] = 0.0
        return ALLOCATE(table, values, budget, **kwargs)

    return allocate


def main() -> None:
    torch.set_num_threads(1)
    name, batch, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dense, x1, _ = bench.build(name)
    if mode != "importance":
        latency_alloc.allocate = macs_valued(mode, channel_macs(dense, x1))
    base = count_macs(dense, (x1,))
    for target in bench.TARGETS:
        model = copy.deepcopy(dense)
        cfg = Channels(target_speedup=target, batch=batch)
        info = netslim.prune_(model, cfg, example_inputs=(x1,))["latency"]
        reduction = base / count_macs(model, (x1,))
        predicted = info["dense_ms"] / info["predicted_ms"]
        measured = info["measured_speedup"]
        print(
            f"{name} b{batch} {mode} {target:g}x: speed-up predicted {predicted:.2f} measured "
            f"{measured:.2f}, MACs reduction {reduction:.2f}, per MACs reduction predicted "
            f"{predicted / reduction:.2f} measured {measured / reduction:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
