"""``netslim compact MODEL_OR_DIR``: remove the dead and constant channels of a saved (or
built) model; the job is ``netslim.jobs.compact``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netslim.cli.args import MODEL_HELP, add_trust_code, add_weights, parse_shape


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compact",
        help="physically remove zero filters / masked or dead channels, folding constants",
    )
    p.add_argument("model", help=f"a directory saved by netslim, or {MODEL_HELP}")
    add_weights(p)
    p.add_argument("--example-shape", type=parse_shape, default=None, help="e.g. 1,3,224,224")
    p.add_argument(
        "--probes", type=int, default=2, help="random inputs that check each constant (>= 0)"
    )
    p.add_argument(
        "--zero-tol",
        type=float,
        default=0.0,
        help="treat channels whose whole parameter unit has L2 norm <= this as zero "
        "(for penalties such as group lasso that shrink without reaching 0; default exact 0)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    p.add_argument("--out", default=None, help="output directory (default: <input>-compact)")
    add_trust_code(p)
    return p


def run(args: argparse.Namespace) -> int:
    from netslim.jobs.compact import compact_job, default_out, summary_lines

    out = Path(args.out) if args.out else default_out(args.model)
    report = compact_job(
        args.model,
        out,
        example_shape=args.example_shape,
        probes=args.probes,
        zero_tol=args.zero_tol,
        latency=not args.no_latency,
        trust_code=args.trust_code,
        weights=args.weights,
    )
    print("\n".join(summary_lines(report)))
    print(f"\nwrote {out}/model and {out}/compact.json")
    return 0
