"""Probe: accuracy of the joint widths-and-blocks latency plan, at equal measured speed-up.

    .venv/bin/python bench/_latency_blocks_accuracy.py [--weights 1 0.1] [--seeds 0 1 2]

``_latency_blocks_probe.py`` shows that the weight a removed block's value carries steers the
plan from widths to blocks (MobileNetV2 at batch 1, 2x: speed-up per MACs reduction 0.46 at
weight 1, 0.90 at 0.1). What each costs in accuracy is the other half. On the accuracy part's
setting of ``bench/latency.py`` (resnet56 on Fashion-MNIST, its cached dense models from
``--part accuracy --stage train``, batch 16, 1 thread, eager, one epoch of fine-tuning for every
variant), per seed and 2x / 3x target: the latency plan of widths alone and the joint plan at
each ``--weights``, solved on one table of the dense model (L2 importance, a single solve: no
plan checks, no reconstruction, the same for every variant); channels kept by their scores,
removed blocks replaced by ``nn.Identity``. Each pruned model is timed paired with the dense
one, fine-tuned and evaluated. Prints only; writes nothing under docs/.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", nargs="*", type=float, default=[1.0, 0.1])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument(
        "--scaled", nargs="*", default=[], choices=["block-influence", "ablation"],
        help="also a joint plan per criterion whose block weights are BLOCK_WEIGHT times each "
        "block's score on 8 training batches over the scores' mean",
    )  # fmt: skip
    p.add_argument("--no-widths", action="store_true", help="skip the widths-only plan")
    args = p.parse_args()
    from latency import TARGETS, _accuracy, _loaders, _train, probe_setting, trained_dense

    target, x1, x = probe_setting("netslim-blocks-accuracy-")
    name = "resnet56"

    from netslim.importance.blocks import score_blocks
    from netslim.layers import find_blocks
    from netslim.measure import count_macs
    from netslim.structural import Channels
    from netslim.structural.allocation import keep_mask
    from netslim.structural.engine import apply_plan, planning_inputs, pruned_copies
    from netslim.structural.latency_blocks import BLOCK_WEIGHT, block_options
    from netslim.structural.latency_knapsack import allocate_reaching, value_curve
    from netslim.structural.latency_measure import build_table
    from netslim.structural.op_timing import time_ratio
    from netslim.structural.plan import PruningPlan

    results: dict[tuple[float, str], list[tuple[float, float, float]]] = {}
    for seed in args.seeds:
        train, test = _loaders(10000, seed)
        dense = trained_dense(name, seed)
        base = count_macs(dense, (x1,))
        found = find_blocks(dense, (x1,))
        names = [b.name for b in found]
        work = copy.deepcopy(dense)
        inputs = planning_inputs(work, (x1,), Channels(target_speedup=2.0, criterion="l2"))
        table = build_table(
            work, (x1,), inputs.analysis, inputs.groups, target,
            pruned_copy=pruned_copies(work, (x1,)),
        )  # fmt: skip
        values = {g: value_curve(s) for g, s in inputs.ranked.items()}
        variants = [] if args.no_widths else [("widths", ())]
        variants += [(f"joint w={w:g}", block_options(table, names, w)) for w in args.weights]
        batches = [b for _, b in zip(range(8), train, strict=False)]
        for crit in args.scaled:
            scores = dict(zip(names, score_blocks(dense, found, batches, crit), strict=True))
            floor = max(max(scores.values()), 1e-12) * 1e-3  # an ablation score can be < 0
            scores = {n: max(v, floor) for n, v in scores.items()}
            mean = statistics.mean(scores.values())
            opts = tuple(
                dataclasses.replace(o, weight=BLOCK_WEIGHT * scores[o.name] / mean)
                for o in block_options(table, names)
            )
            print(f"seed {seed} {crit} weights: "
                  + " ".join(f"{o.weight:.3f}" for o in opts), flush=True)  # fmt: skip
            variants.append((f"joint {crit}", opts))
        for sp in TARGETS:
            for label, opts in variants:
                start = time.perf_counter()
                alloc = allocate_reaching(
                    table, values, table.dense_ms / sp, fixed=inputs.fixed, blocks=opts
                )
                solve_s = time.perf_counter() - start
                model = copy.deepcopy(dense)
                analysis = planning_inputs(model, (x1,), Channels(criterion="l2")).analysis
                plan = PruningPlan(example_inputs=(x1,), traced_on=analysis)
                plan.bypass = list(alloc.removed)  # a removed block's groups are whole
                for g in inputs.groups:
                    n = alloc.counts.get(g.id, g.size)
                    if n < g.size:
                        plan.keep[g.id] = (
                            keep_mask(inputs.scores[g.id], n).nonzero().flatten().tolist()
                        )
                        plan.sizes[g.id] = g.size
                apply_plan(model, plan)
                speedup = 1 / time_ratio(model.eval(), dense, (x,), target)
                reduction = base / count_macs(model, (x1,))
                _train(model, train, 1, 0.01, seed)
                acc = _accuracy(model.eval(), test)
                results.setdefault((sp, label), []).append((acc, speedup, reduction))
                print(f"seed {seed} {sp:g}x {label:12s}: {len(alloc.removed):2d} blocks out, "
                      f"solved in {solve_s:.1f} s, speed-up {speedup:.2f}x, MACs reduction "
                      f"{reduction:.2f}x, accuracy after "
                      f"fine-tuning {acc:.2f}%", flush=True)  # fmt: skip
    for (sp, label), rows in sorted(results.items()):
        accs, sps, reds = zip(*rows, strict=True)
        print(f"{sp:g}x {label:12s}: mean accuracy {statistics.mean(accs):.2f}% over {len(accs)}, "
              f"speed-up {min(sps):.2f}-{max(sps):.2f}x, MACs reduction "
              f"{min(reds):.2f}-{max(reds):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
