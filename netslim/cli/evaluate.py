"""``netslim eval DIR``: re-measure a saved result (``netslim.jobs.evaluation``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from netslim.cli.args import add_trust_code, parse_shape, positive_int


def add_parser(sub: Any) -> argparse.ArgumentParser:
    ev = sub.add_parser("eval", help="re-measure a saved result")
    ev.add_argument(
        "directory",
        help="a directory written by netslim prune, its model/ folder, a .nsz file written by "
        "netslim compress, or an ONNX export (a .onnx file or netslim export's folder)",
    )
    ev.add_argument(
        "--data",
        default=None,
        help="data to measure accuracy on (default: the one used for pruning; none: measure without"
        " accuracy)",
    )
    ev.add_argument(
        "--limit-test", type=positive_int, default=None, help="measure on N test samples"
    )
    ev.add_argument("--example-shape", type=parse_shape, default=None, help="example input shape")
    ev.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    add_trust_code(ev)
    return ev


def run(args: argparse.Namespace) -> int:
    from netslim.jobs.evaluation import evaluate_saved
    from netslim.report import before_after_table

    result = evaluate_saved(
        Path(args.directory),
        data=args.data,
        limit_test=args.limit_test,
        example_shape=args.example_shape,
        latency=not args.no_latency,
        trust_code=args.trust_code,
    )
    print(json.dumps(result["measured"], indent=2))
    if "params_before" in result.get("report", {}):  # a prune job's (a compact job's has none)
        print(before_after_table(result["report"]))
    return 0
