"""Arguments every training command shares (model spec, data, optimiser basics, seed), declared
once so ``prune``, ``lottery`` and ``sensitivity`` spell and validate them the same way."""

from __future__ import annotations

import argparse
from typing import Any

MODEL_HELP = "zoo:NAME | torchvision:NAME | timm:NAME | hf:PATH | py:FILE.py:FACTORY"
DATA_HELP = "fashion-mnist | digits | synthetic | DIR with IDX files"


def parse_shape(text: str) -> list[int]:
    """``--example-shape 1,3,224,224`` -> ``[1, 3, 224, 224]``."""
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like 1,3,224,224, got {text!r}"
        ) from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"shape dims must be positive, got {text!r}")
    return dims


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)


def add_data(
    p: argparse.ArgumentParser,
    *,
    lr: float = 1e-3,
    batch_size: int = 128,
    data_help: str = DATA_HELP,
) -> None:
    """``--data --lr --batch-size --limit-train --limit-test --seed`` (defaults per command)."""
    p.add_argument("--data", default="fashion-mnist", help=data_help)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument(
        "--limit-train", type=int, default=None, help="use a fixed subset of N training samples"
    )
    p.add_argument(
        "--limit-test", type=int, default=None, help="use a fixed subset of N test samples"
    )
    p.add_argument("--seed", type=int, default=0)


def loaders(args: argparse.Namespace) -> tuple[Any, Any]:
    """The (train, test) loaders the :func:`add_data` arguments describe."""
    from netslim.data import make_loaders

    return make_loaders(
        args.data,
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        seed=args.seed,
    )
