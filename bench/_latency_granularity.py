"""Probe: why ViT-B/16's eager plans land faster than their targets (docs/latency.md, run notes).

    .venv/bin/python bench/_latency_granularity.py [--runtime torch] [--threads 1] [--batch 1]

Plans ViT-B/16 (random weights, as in the bench) at 2x and 3x with ``Channels(target_speedup=)``
and records what the knapsack saw at each solve (wrapping ``latency_knapsack.allocate``): the budget,
the prediction of the widths it chose, the groups and their widths. Then, on the same table and
values, for every width of the residual stream's group, the widest uniform MLP width that fits
the budget, with its prediction and kept value (the plan's own candidate widths: its round_to
and floor): what a plan nearer the target would have had to give up. Prints only; writes nothing under docs/ (a probe, like ``_latency_bound.py``).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _widths(size: int, options: dict) -> list[int]:
    """A group's candidate widths as the plan saw them (its round_to and floor)."""
    from netslim.structural.allocation import min_keep
    from netslim.structural.latency_knapsack import candidate_widths

    round_to, fraction = options.get("round_to", 1), options.get("min_fraction", 0.25)
    return candidate_widths(size, round_to, min_keep(size, round_to, fraction))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runtime", default="torch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    os.environ["NETSLIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="netslim-granularity-")
    import torchvision

    import netslim
    import netslim.structural.latency_knapsack as alloc_mod
    from netslim.structural import Channels

    netslim.retain_freed_memory()
    torch.manual_seed(0)
    dense = torchvision.models.get_model("vit_b_16", weights=None).eval()
    x1 = torch.randn(1, 3, 224, 224)
    solves: list[tuple] = []
    allocate = alloc_mod.allocate

    def recording(table, values, budget_ms, **kw):
        result = allocate(table, values, budget_ms, **kw)
        solves.append((table, values, budget_ms, kw, result))
        return result

    alloc_mod.allocate = recording
    for target in (2.0, 3.0):
        solves.clear()
        cfg = Channels(
            target_speedup=target, runtime=args.runtime, threads=args.threads, batch=args.batch
        )
        info = netslim.prune_(copy.deepcopy(dense), cfg, example_inputs=(x1,))["latency"]
        print(
            f"{target:g}x: budget {info['budget_ms']:.1f} ms (dense {info['dense_ms']:.1f}), "
            f"predicted {info['predicted_ms']:.1f}, measured {info['measured_ms']:.1f} "
            f"({info['measured_ms'] / info['budget_ms'] - 1:+.1%} against the budget), "
            f"{len(info['checks'])} check(s)"
        )
        table, values, budget, kw, result = solves[-1]
        stream = min(values, key=lambda g: table.sizes[g])  # 12 atoms: one per head
        mlps = [g for g in values if g != stream]
        curve = {g: values[g].tolist() for g in values}
        widths = sorted({result.counts[g] for g in mlps})
        print(
            f"  last solve: budget {budget:.1f}, predicted {result.predicted_ms:.1f}; "
            f"{stream} {result.counts[stream]} of {table.sizes[stream]}, "
            f"{len(mlps)} MLP groups at {widths} of {table.sizes[mlps[0]]}, "
            f"value {result.value:.1f}"
        )
        print(f"  note: {info.get('note')}")
        cands = _widths(table.sizes[mlps[0]], kw)
        for units in _widths(table.sizes[stream], kw):
            for w in reversed(cands):
                counts = {**table.sizes, stream: units, **{g: w for g in mlps}}
                if table.predict(counts) <= budget:
                    value = sum(curve[g][counts[g] - 1] for g in values)
                    print(
                        f"    stream {units:2d}: MLPs at {w:4d} -> {table.predict(counts):.1f} ms, "
                        f"value {value:.1f}"
                    )
                    break


if __name__ == "__main__":
    main()
