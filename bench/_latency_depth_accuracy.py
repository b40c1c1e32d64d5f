"""Probe: does removing blocks before the width plan keep accuracy at equal speed-up?

    .venv/bin/python bench/_latency_depth_accuracy.py [--blocks 9] [--seeds 0 1 2]

``_latency_depth_probe.py`` shows that whole blocks buy speed at about their share of the MACs
where widths do not; what they cost in accuracy is the other half of the question. On the
accuracy part's setting of ``bench/latency.py`` (resnet56 on Fashion-MNIST, its cached dense
models from ``--part accuracy --stage train``, batch 16, 1 thread, eager, the same fine-tuning
for every variant), per seed and 2x / 3x target: (a) netslim's latency plan as the bench makes
it; (b) the ``--blocks`` residual blocks of lowest block influence (8 training batches) removed
first, then the latency plan for what is left of the target. Both are timed paired with the
dense model, fine-tuned alike and evaluated. Prints only; writes nothing under docs/.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--blocks", type=int, default=9)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    args = p.parse_args()
    from latency import TARGETS, _accuracy, _loaders, _train, probe_setting, trained_dense

    target, x1, x = probe_setting("netslim-depth-accuracy-")
    name = "resnet56"

    import netslim
    from netslim.importance.blocks import choose
    from netslim.layers import find_blocks, remove_blocks, score_blocks
    from netslim.measure import count_macs
    from netslim.structural import Channels
    from netslim.structural.op_timing import time_ratio

    results: dict[tuple[float, str], list[float]] = {}
    for seed in args.seeds:
        train, test = _loaders(10000, seed)
        dense = trained_dense(name, seed)
        base = count_macs(dense, (x1,))
        blocks = find_blocks(dense, (x1,))
        batches = [xb for (xb, _), _ in zip(train, range(8), strict=False)]
        scores = score_blocks(dense, blocks, batches, "block-influence")
        gone = [blocks[i].name for i in choose(scores, args.blocks)]
        shallow = copy.deepcopy(dense)
        remove_blocks(shallow, gone)
        depth_speedup = 1 / statistics.median(
            time_ratio(shallow.eval(), dense, (x,), target) for _ in range(3)
        )
        print(f"seed {seed}: {len(gone)} of {len(blocks)} blocks out {gone}: "
              f"{depth_speedup:.2f}x at {base / count_macs(shallow, (x1,)):.2f}x fewer MACs")  # fmt: skip
        for sp in TARGETS:
            variants = {"widths": (copy.deepcopy(dense), sp)}
            if depth_speedup < sp:
                variants["blocks + widths"] = (copy.deepcopy(shallow), sp / depth_speedup)
            for label, (model, goal) in variants.items():
                cfg = Channels(target_speedup=goal, batch=16, criterion="l2")
                netslim.prune_(model, cfg, example_inputs=(x1,), train_loader=train)
                speedup = 1 / time_ratio(model.eval(), dense, (x,), target)
                reduction = base / count_macs(model, (x1,))
                _train(model, train, 1, 0.01, seed)
                acc = _accuracy(model.eval(), test)
                results.setdefault((sp, label), []).append(acc)
                print(f"  {sp:g}x {label:16s}: speed-up {speedup:.2f}x, MACs reduction "
                      f"{reduction:.2f}x, accuracy after fine-tuning {acc:.2f}%", flush=True)  # fmt: skip
    for (sp, label), accs in sorted(results.items()):
        print(f"{sp:g}x {label:16s}: mean accuracy {statistics.mean(accs):.2f}% over {len(accs)}")


if __name__ == "__main__":
    main()
