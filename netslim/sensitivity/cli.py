"""``netslim sensitivity MODEL --data ...``: per-unit accuracy curves, a table, a plot, and a
``per_module.json`` allocation for ``netslim prune --per-module FILE``.

Writes ``OUT/sensitivity.json`` (the scan), ``OUT/sensitivity.md`` (table),
``OUT/sensitivity.png`` (one curve per unit) and ``OUT/per_module.json`` (ratios proposed for
``--target-macs``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from netslim.cli.args import add_data, add_model, loaders, parse_shape


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sensitivity",
        help="prune each channel group alone at 10-90%%, measure, propose per-module ratios",
    )
    add_model(p)
    add_data(p)
    p.add_argument("--epochs", type=int, default=2, help="train this long first (0: as built)")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    p.add_argument("--criterion", default="l2", help="structural criterion (l2, bn, taylor, ...)")
    p.add_argument(
        "--target-macs", type=float, default=0.5, help="fraction of MACs the proposal keeps"
    )
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument("--ignore", nargs="*", default=[])
    p.add_argument(
        "--out", default=None, help="output directory (default runs/<model>-sensitivity)"
    )
    p.add_argument("--example-shape", type=parse_shape, default=None, help="e.g. 1,3,224,224")
    p.add_argument("--no-progress", action="store_true")
    return p


def _ratios(text: str) -> list[float]:
    from netslim.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--ratios must be comma-separated fractions, got {text!r}") from None


def table(scan: dict[str, Any]) -> str:
    head = "| unit | " + " | ".join(f"{r:.0%}" for r in scan["ratios"]) + " |"
    lines = [f"baseline accuracy {scan['baseline']:.4f}", "", head]
    lines.append("|---" * (len(scan["ratios"]) + 1) + "|")
    for u in scan["units"]:
        lines.append(f"| {u['module']} | " + " | ".join(f"{a:.3f}" for a in u["accuracy"]) + " |")
    return "\n".join(lines)


def plot(scan: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for u in scan["units"]:
        ax.plot(scan["ratios"], u["accuracy"], marker="o", markersize=3, label=u["module"])
    ax.axhline(scan["baseline"], color="grey", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel("fraction of the unit's channels removed")
    ax.set_ylabel("accuracy")
    ax.set_title("Sensitivity: each unit pruned alone")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    from netslim.importance import Calibration
    from netslim.models.spec import build_model, make_example_inputs
    from netslim.sensitivity import propose_ratios, scan_sensitivity
    from netslim.structural.importance import get
    from netslim.training import evaluate, seed_everything, train

    ratios = _ratios(args.ratios)
    get(args.criterion)  # unknown names fail before any training
    seed_everything(args.seed)
    model = build_model(args.model)
    example = make_example_inputs(model, args.example_shape)
    train_loader, test_loader = loaders(args)
    if args.epochs:
        train(model, train_loader, epochs=args.epochs, lr=args.lr, progress=not args.no_progress)
    model.eval()
    scan = scan_sensitivity(
        model,
        example,
        lambda m: evaluate(m, test_loader),
        ratios=ratios,
        criterion=args.criterion,
        ignore=args.ignore,
        calibration=Calibration(train_loader, batches=4),
        log=None if args.no_progress else print,
    )
    proposal = propose_ratios(
        model,
        example,
        scan,
        args.target_macs,
        round_to=args.round_to,
        ignore=tuple(args.ignore),
    )
    out = Path(args.out or f"runs/{args.model.replace(':', '-').replace('/', '_')}-sensitivity")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensitivity.json").write_text(json.dumps({**scan, "proposal": proposal}, indent=2))
    (out / "sensitivity.md").write_text(table(scan) + "\n")
    (out / "per_module.json").write_text(json.dumps(proposal["per_module"], indent=2))
    plot(scan, out / "sensitivity.png")
    print(table(scan))
    print(
        f"\nproposed ratios keep {proposal['macs_fraction']:.3f} of MACs "
        f"(predicted accuracy drop {proposal['predicted_drop']:.3f}); wrote {out}/per_module.json"
        f" - use it with: netslim prune {args.model} --method channel --per-module "
        f"{out}/per_module.json"
    )
    return 0
