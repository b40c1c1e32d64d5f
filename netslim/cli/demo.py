"""``netslim demo`` (``make demo``): the main job, ``netslim prune`` with fixed arguments."""

from __future__ import annotations

import argparse
from typing import Any

from netslim.cli import prune
from netslim.cli.args import Parser

# The reference CNN on Fashion-MNIST, channels removed physically (global L2 ranking),
# fine-tuned with distillation; about 10 minutes on 2 cores.
DEMO_ARGS = [
    "zoo:vgg_small",
    "--method",
    "channel",
    "--ratio",
    "0.5",
    "--epochs",
    "3",
    "--finetune-epochs",
    "2",
    "--distill",
]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    demo = sub.add_parser(
        "demo",
        help="the main job: train the reference CNN on Fashion-MNIST, prune, fine-tune, report",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--data", default="fashion-mnist", help="data set")
    demo.add_argument("--no-progress", action="store_true", help="hide progress output")
    return demo


def run(args: argparse.Namespace) -> int:
    parser = Parser(prog="netslim prune")
    prune.add_arguments(parser)
    argv = [*DEMO_ARGS, "--data", args.data, "--out", args.out]
    return prune.run(parser.parse_args(argv + (["--no-progress"] if args.no_progress else [])))
