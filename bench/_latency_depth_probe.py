"""Probe: what removing whole residual blocks buys per MAC, where widths buy little.

    .venv/bin/python bench/_latency_depth_probe.py [--batch 1] [--repeats 3]

Issue #15's efficiency bar (speed-up per MACs reduction) is far off for MobileNetV2 at batch 1,
eager, 1 thread: per-op time that no width removes sets much of the time (docs/latency.md,
*What the allocation can do about it*). A block removed takes its ops' fixed time with it. For
MobileNetV2 and ResNet-50 (random weights, as in the bench), this removes sets of the blocks
``netslim.layers.find_blocks`` finds removable (residual, shape-preserving) and times each model
paired with the dense model (``op_timing.time_ratio``, median of ``--repeats``; freed memory
kept, as in the bench); then, with every removable block out, a width plan
(``Channels(target_speedup=)``) for what is left of 2x and 3x. Prints speed-up, MACs reduction and their ratio; writes nothing under
docs/ (a probe: the latency allocation chooses widths only).
"""

from __future__ import annotations

import argparse
import copy
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
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torchvision

    import netslim
    from netslim.layers import find_blocks, remove_blocks
    from netslim.measure import count_macs
    from netslim.structural import Channels
    from netslim.structural.op_timing import Target, time_ratio

    os.environ["NETSLIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="netslim-depth-probe-")
    netslim.retain_freed_memory()
    target = Target("torch", 1, args.batch)
    for name in ("mobilenet_v2", "resnet50"):
        torch.manual_seed(0)
        dense = torchvision.models.get_model(name, weights=None).eval()
        x1 = torch.randn(1, 3, 224, 224)
        x = x1.expand(args.batch, -1, -1, -1).contiguous()
        blocks = [b.name for b in find_blocks(dense, (x1,))]
        half = len(blocks) // 2
        sets = {
            "all removable": blocks,
            "later half": blocks[half:],
            "earlier half": blocks[:half],
            "every other": blocks[::2],
        }
        base = count_macs(dense, (x1,))

        def measure(model, dense=dense, x=x, x1=x1, base=base):
            """Speed-up (median paired ratio), MACs reduction, and the ratios."""
            ratios = [time_ratio(model, dense, (x,), target) for _ in range(args.repeats)]
            return 1 / statistics.median(ratios), base / count_macs(model, (x1,)), ratios

        print(f"{name} batch {args.batch}: {len(blocks)} removable blocks {blocks}")
        for label, names in sets.items():
            model = copy.deepcopy(dense)
            remove_blocks(model, names)
            speedup, reduction, ratios = measure(model)
            print(
                f"  {label:14s} ({len(names):2d} blocks): speed-up {speedup:.2f}x "
                f"(paired ratios {min(ratios):.3f}-{max(ratios):.3f}), MACs reduction "
                f"{reduction:.2f}x, speed-up / MACs reduction {speedup / reduction:.2f}"
            )
            if label == "all removable":
                depth_only, shallow = speedup, model
        for goal in (2.0, 3.0):  # every removable block out, then widths for the rest
            if depth_only >= goal:
                continue
            model = copy.deepcopy(shallow)
            cfg = Channels(target_speedup=goal / depth_only, runtime="torch", batch=args.batch)
            netslim.prune_(model, cfg, example_inputs=(x1,))
            speedup, reduction, _ = measure(model)
            print(
                f"  all blocks out + widths for {goal:g}x: speed-up {speedup:.2f}x, MACs "
                f"reduction {reduction:.2f}x, speed-up / MACs reduction {speedup / reduction:.2f}"
            )


if __name__ == "__main__":
    main()
