"""``netslim latency MODEL``: build (or load from the cache) the model's latency table on this
machine and plot it, so the staircases that ``--target-latency`` / ``--target-speedup`` land on
are visible.

Writes ``OUT/latency_table.json`` (every layer's measured lines, the calibration and the fitted
remainder) and ``OUT/latency_table.png`` (time against kept width, one curve per layer, the
fast end of each step marked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from netslim.cli.args import MODEL_HELP, parse_shape


def add_time_target_args(p: argparse.ArgumentParser) -> None:
    """``--runtime --threads --batch``: where a latency table is measured (prune and latency)."""
    from netslim.cli.args import choice, positive_int

    p.add_argument(
        "--runtime",
        type=choice("torch", "onnxruntime", "cuda", what="runtime"),
        default="torch",
        help="where time is measured: torch (eager CPU) | onnxruntime (CPU) | cuda",
    )
    p.add_argument(
        "--threads", type=positive_int, default=1, help="intra-op threads for the timing"
    )
    p.add_argument(
        "--batch", type=positive_int, default=None, help="batch size timed (default: the example's)"
    )
    p.add_argument(
        "--retain-freed-memory", action="store_true",
        help="time as a process whose malloc keeps freed tensor memory (no page faults per call; "
        "deploy the same way: netslim.retain_freed_memory(), jemalloc or tcmalloc)",
    )  # fmt: skip


def apply_time_target_args(args: argparse.Namespace) -> None:
    """The process-level part of ``add_time_target_args``: the allocator setting, before any
    timing."""
    if args.retain_freed_memory:
        from netslim._runtime import retain_freed_memory

        if not retain_freed_memory():
            print("note: --retain-freed-memory needs glibc's malloc; timing with the system's")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("latency", help="measure and plot the per-layer latency table of a model")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--example-shape", type=parse_shape, default=None, help="e.g. 1,3,224,224")
    add_time_target_args(p)
    p.add_argument(
        "--refresh", action="store_true",
        help="measure every point again, replacing the cached table (after the load changed)",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="output directory (default runs/<model>-latency)")
    return p


def run(args: argparse.Namespace) -> int:
    from netslim.structural.op_timing import Target, require_target

    require_target(Target(args.runtime, args.threads, 1 if args.batch is None else args.batch))
    apply_time_target_args(args)
    from netslim.jobs.settings import default_run_dir
    from netslim.models.spec import build_model, make_example_inputs
    from netslim.structural.config import Channels
    from netslim.structural.engine import candidates, pruned_copies
    from netslim.structural.groups import analyze
    from netslim.structural.latency_alloc import allocator_note, target_of
    from netslim.structural.latency_measure import build_table

    model = build_model(args.model).eval()
    inputs = make_example_inputs(model, args.example_shape)
    config = Channels(runtime=args.runtime, threads=args.threads, batch=args.batch)
    target = target_of(config, inputs)
    analysis = analyze(model, inputs)
    groups = candidates(analysis, config)
    table = build_table(
        model, inputs, analysis, groups, target, pruned_copy=pruned_copies(model, inputs),
        refresh=args.refresh,
    )  # fmt: skip
    out = Path(args.out) if args.out else default_run_dir(args.model, "latency")
    out.mkdir(parents=True, exist_ok=True)
    payload = table_dict(table)
    (out / "latency_table.json").write_text(json.dumps(payload, indent=1))
    png = plot_table(table, out / "latency_table.png")
    print(
        f"{args.model} on {target.runtime}, {target.threads} thread(s), batch {target.batch}: "
        f"dense {table.dense_ms:.3f} ms measured, {len(table.layers)} layers, "
        f"{table.measured_points} points measured ({table.build_s:.1f} s; the rest from the "
        "cache)"
    )
    note = allocator_note(table.page_faults)
    if note:
        print(f"note: {note}")
    print(f"wrote {out}/latency_table.json" + (f" and {png}" if png else ""))
    return 0


def table_dict(table: Any) -> dict[str, Any]:
    from netslim.structural.knapsack import staircase_steps

    layers = []
    for la in table.layers:
        entry: dict[str, Any] = {
            "name": la.name,
            "op": la.op.key(),
            "depthwise": la.depthwise,
            "full_ms": la.full_ms,
            "overhead_ms": la.overhead,
            "in_groups": sorted(la.cin.terms),
            "out_groups": sorted(la.cout.terms),
        }
        for side, line in (("in", la.in_line), ("out", la.out_line)):
            if line:
                ws = sorted(line)
                entry[f"{side}_line"] = {str(w): line[w] for w in ws}
                entry[f"{side}_steps"] = staircase_steps(ws, [line[w] for w in ws])
        layers.append(entry)
    return {
        "target": table.target.key(),
        "dense_ms": table.dense_ms,
        "predicted_dense_ms": table.predict(),
        "scale": table.scale,
        "remainder_fixed_ms": table.remainder_fixed,
        "remainder_var_ms": table.remainder_var,
        "calibration": table.calibration,
        "build_s": table.build_s,
        "measured_points": table.measured_points,
        "page_faults_per_call": table.page_faults,
        "layers": layers,
    }


def plot_table(table: Any, path: Path, top: int = 12) -> Path | None:
    """Time against kept output width of the ``top`` slowest layers (relative widths), fast ends
    of the steps marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from netslim.structural.knapsack import fast_end

    layers = sorted((la for la in table.layers if la.out_line), key=lambda la: -la.full_ms)[:top]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for la in layers:
        ws = sorted(la.out_line)
        ts = [la.out_line[w] for w in ws]
        (line,) = ax.plot(ws, ts, linewidth=1, label=f"{la.name} ({la.op.cout})")
        ends = fast_end(ws, ts, tol=0.02)
        ax.plot([ws[i] for i in ends], [ts[i] for i in ends], "o", ms=2.5, color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("kept output channels (input at full width)")
    ax.set_ylabel("ms")
    t = table.target
    ax.set_title(f"Layer latency, {t.runtime}, {t.threads} thread(s), batch {t.batch}")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
