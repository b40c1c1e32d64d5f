"""``netslim sensitivity MODEL --data ...``: per-unit accuracy curves, a table, a plot, and a
``per_module.json`` allocation for ``netslim prune --per-module FILE`` (the job is
``netslim.jobs.sensitivity``).

Writes ``OUT/sensitivity.json`` (the scan), ``OUT/sensitivity.md`` (table),
``OUT/sensitivity.png`` (one curve per unit) and ``OUT/per_module.json`` (ratios proposed for
``--target-macs``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netslim.cli.args import (
    DEFAULTS,
    EPOCHS_HELP,
    add_data,
    add_data_source,
    add_model,
    data_settings,
    kept_fraction,
    nonnegative_int,
    parse_shape,
    positive_int,
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sensitivity",
        help="prune each channel group alone at 10-90%%, measure, propose per-module ratios",
    )
    add_model(p)
    add_data(p)
    add_data_source(p)
    p.add_argument("--epochs", type=nonnegative_int, default=DEFAULTS["epochs"], help=EPOCHS_HELP)
    p.add_argument(
        "--ratios",
        default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        help="the --ratio values each unit is pruned at, alone",
    )
    p.add_argument("--criterion", default="l2", help="structural criterion (l2, bn, taylor, ...)")
    p.add_argument(
        "--target-macs", type=kept_fraction, default=0.5, help="fraction of MACs the proposal keeps"
    )
    p.add_argument(
        "--round-to", type=positive_int, default=1, help="keep channel counts multiples of K"
    )
    p.add_argument(
        "--ignore",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="modules whose outputs keep their width",
    )
    p.add_argument(
        "--out", default=None, help="output directory (default: runs/<model>-sensitivity)"
    )
    p.add_argument(
        "--example-shape",
        type=parse_shape,
        default=None,
        help="example input shape, e.g. 1,3,224,224",
    )
    p.add_argument("--no-progress", action="store_true", help="hide per-unit progress lines")
    return p


def _ratios(text: str) -> list[float]:
    from netslim.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--ratios must be comma-separated fractions, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from netslim.errors import ConfigError
    from netslim.jobs.preflight import check_out
    from netslim.jobs.sensitivity import sensitivity_job, table
    from netslim.jobs.settings import default_run_dir, resolve_data

    ratios = _ratios(args.ratios)
    out = Path(args.out) if args.out else default_run_dir(args.model, "sensitivity")
    check_out(str(out))
    data = resolve_data(args.data, args.model)
    if data is None:
        raise ConfigError("netslim sensitivity measures accuracy: give --data")
    scan, proposal = sensitivity_job(
        data_settings(args, data),
        weights=args.weights,
        ratios=ratios,
        criterion=args.criterion,
        epochs=args.epochs,
        lr=args.lr,
        target_macs=args.target_macs,
        round_to=args.round_to,
        ignore=list(args.ignore),
        example_shape=args.example_shape,
        progress=not args.no_progress,
        out=out,
    )
    print(table(scan))
    print(
        f"\nproposed ratios keep {proposal['macs_fraction']:.3f} of MACs "
        f"(predicted accuracy drop {proposal['predicted_drop']:.3f}); wrote {out}/per_module.json"
        f" - use it with: {_prune_command(args, out / 'per_module.json')}"
    )
    if "note" in proposal:
        print(f"note: {proposal['note']}")
    return 0


def _prune_command(args: argparse.Namespace, per_module: Path) -> str:
    """The ``netslim prune`` line that uses the proposal on the same model, weights and data."""
    import shlex

    words = ["netslim", "prune", args.model, "--method", "channel", "--per-module", per_module]
    given = {
        "--weights": args.weights,
        "--data": None if args.data == "auto" else args.data,
        "--val-split": args.val_split,
        "--image-column": args.image_column,
        "--text-column": args.text_column,
        "--label-column": args.label_column,
        "--example-shape": ",".join(map(str, args.example_shape)) if args.example_shape else None,
    }
    for flag, value in given.items():
        if value is not None:
            words += [flag, value]
    return shlex.join(str(w) for w in words)
