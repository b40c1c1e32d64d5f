"""Probe: one knapsack over widths *and* whole residual blocks, under a time budget.

    .venv/bin/python bench/_latency_blocks_probe.py [--batch 1] [--models mobilenet_v2 resnet50]

``_latency_depth_probe.py`` found that whole blocks buy speed at about their share of the MACs
where widths do not (MobileNetV2 at batch 1). Here the latency allocation itself chooses which
blocks to remove, beside every group's width (``allocate(..., blocks=)``: a removed block loses
its inner groups' kept value and saves its layers' time and a share of the table's fixed
remainder). For MobileNetV2 and ResNet-50 (random weights, as in the bench's speed part; L2
importance, normalised per group as the plans rank it), at 2x and 3x speed-up targets: the
plan's widths and removed blocks, its predicted time, and the pruned copy (blocks replaced by
``nn.Identity``) timed paired with the dense model (``op_timing.time_ratio``, median of 3), its
MACs reduction and speed-up per MACs reduction; beside it, the widths-only plan the same way.
No plan checks (a single solve for the budget). Prints only; writes nothing under docs/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--models", nargs="*", default=["mobilenet_v2", "resnet50"])
    p.add_argument("--weights", nargs="*", type=float, default=[1.0])
    args = p.parse_args()
    import torchvision

    import netslim
    from netslim.layers import find_blocks
    from netslim.measure import count_macs
    from netslim.structural import Channels
    from netslim.structural.engine import planning_inputs, pruned_copies
    from netslim.structural.latency_blocks import block_options
    from netslim.structural.latency_knapsack import allocate_reaching, value_curve
    from netslim.structural.latency_measure import build_table
    from netslim.structural.op_timing import Target, time_ratio

    os.environ["NETSLIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="netslim-blocks-probe-")
    netslim.retain_freed_memory()
    target = Target("torch", 1, args.batch)
    for name in args.models:
        torch.manual_seed(0)
        dense = torchvision.models.get_model(name, weights=None).eval()
        x1 = torch.randn(1, 3, 224, 224)
        x = x1.expand(args.batch, -1, -1, -1).contiguous()
        cfg = Channels(target_speedup=2.0, batch=args.batch)
        inputs = planning_inputs(dense, (x1,), cfg)
        make = pruned_copies(dense, (x1,))
        table = build_table(dense, (x1,), inputs.analysis, inputs.groups, target, pruned_copy=make)
        names = [b.name for b in find_blocks(dense, (x1,))]
        variants = [("widths", ())] + [
            (f"+ blocks w={w:g}", block_options(table, names, w)) for w in args.weights
        ]
        values = {g: value_curve(s) for g, s in inputs.ranked.items()}
        sizes = {g.id: g.size for g in inputs.groups}
        base = count_macs(dense, (x1,))
        print(f"{name} batch {args.batch}: dense {table.dense_ms:.2f} ms, {len(names)} blocks")
        for goal in (2.0, 3.0):
            budget = table.dense_ms / goal
            for label, opts in variants:
                alloc = allocate_reaching(table, values, budget, fixed=inputs.fixed, blocks=opts)
                model = make({**sizes, **alloc.counts, **inputs.fixed}, tuple(alloc.removed))
                ratios = [time_ratio(model.eval(), dense, (x,), target) for _ in range(3)]
                speedup = 1 / statistics.median(ratios)
                reduction = base / count_macs(model, (x1,))
                print(
                    f"  {goal:g}x {label:16s}: removed {len(alloc.removed):2d} "
                    f"{alloc.removed}, predicted {alloc.predicted_ms:.2f} ms (budget "
                    f"{budget:.2f}), measured {table.dense_ms * statistics.median(ratios):.2f} "
                    f"ms, speed-up {speedup:.2f}x, MACs reduction {reduction:.2f}x, per MACs "
                    f"reduction {speedup / reduction:.2f}"
                    + (f"; {alloc.note}" if alloc.note else "")
                )


if __name__ == "__main__":
    main()
