"""``netslim lottery MODEL``: a lottery-ticket search from the command line (arguments -> a
:class:`Lottery` config; the job is ``netslim.jobs.lottery``).

Writes ``OUT/lottery.json`` (every round's ticket and controls), ``OUT/lottery.png``,
``OUT/checkpoints/`` (resumable: rerun the same command after an interruption) and
``OUT/ticket/`` (the last round's ticket, a directory ``netslim.load`` and ``netslim eval``
read). Every setting is checked before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netslim.cli.args import (
    DEFAULTS,
    Deprecated,
    add_data,
    add_data_source,
    add_model,
    choice,
    data_settings,
    fraction,
    nonnegative_int,
    positive_fraction,
    positive_int,
)
from netslim.errors import ConfigError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "lottery",
        help="find a lottery ticket: iterative magnitude pruning with rewinding, plus controls",
    )
    add_model(p)
    add_data(p)
    add_data_source(p)
    p.add_argument("--rounds", type=positive_int, default=5, help="pruning rounds K")
    p.add_argument(
        "--ratio",
        type=positive_fraction,
        default=0.5,
        help="fraction of the weights removed after all rounds (each round removes "
        "1-(1-ratio)^(1/K) of the weights still kept)",
    )
    p.add_argument(
        "--rate",
        dest="rate_per_round",
        type=positive_fraction,
        action=Deprecated,
        new="--ratio (the fraction removed after all rounds)",
        default=None,
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--scope", type=choice("global", "layer"), default="global", help="global | layer"
    )
    p.add_argument(
        "--classifier-rate",
        type=fraction,
        default=None,
        help="per-round rate of the output layer (default rate/2; 0 keeps it dense)",
    )
    p.add_argument(
        "--masks",
        type=choice("magnitude", "channel-l1", "channel-l2", what="mask maker"),
        default="magnitude",
        help="magnitude | channel-l1 | channel-l2",
    )
    p.add_argument(
        "--rewind",
        type=choice("weights", "lr", what="rewind"),
        default="weights",
        help="weights (reset survivors to iteration k) | lr (keep weights, replay the lr schedule)",
    )
    p.add_argument(
        "--rewind-iter",
        type=nonnegative_int,
        default=0,
        help="k: rewind to this iteration (0 = init)",
    )
    p.add_argument(
        "--controls",
        nargs="*",
        default=None,
        help="run controls each round: reinit random_mask magnitude (no names = all three)",
    )
    p.add_argument(
        "--epochs",
        type=nonnegative_int,
        default=DEFAULTS["epochs"],
        help="training epochs before each pruning round",
    )
    p.add_argument(
        "--iterations",
        type=positive_int,
        default=None,
        help="training steps per round (overrides epochs)",
    )
    p.add_argument(
        "--optimizer",
        type=choice("adam", "sgd", what="optimizer"),
        default="adam",
        help="adam | sgd",
    )
    p.add_argument(
        "--lr-schedule",
        type=choice("constant", "cosine"),
        default="constant",
        help="learning-rate schedule: constant | cosine",
    )
    p.add_argument(
        "--schedule",
        dest="lr_schedule",
        type=choice("constant", "cosine"),
        action=Deprecated,
        new="--lr-schedule (--schedule is the pruning schedule in netslim prune)",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--eval-every",
        type=positive_int,
        default=None,
        help="validate every N steps (default T/10)",
    )
    p.add_argument(
        "--val-size",
        type=nonnegative_int,
        default=None,
        help="training samples held out for early stopping (default 10%%; 0 = use the test set)",
    )
    p.add_argument("--out", default=None, help="output directory (default runs/<model>-lottery)")
    return p


def _config(args: argparse.Namespace):
    from netslim.lottery.config import CONTROLS, Lottery

    controls: tuple[str, ...] = ()
    if args.controls is not None:
        controls = tuple(args.controls) or CONTROLS
    return Lottery(
        rounds=args.rounds,
        rate=(
            args.rate_per_round
            if args.rate_per_round is not None
            else 1 - (1 - args.ratio) ** (1 / args.rounds)
        ),
        scope=args.scope,
        classifier_rate=args.classifier_rate,
        masks=args.masks,
        rewind=args.rewind,
        rewind_iter=args.rewind_iter,
        iterations=args.iterations,
        epochs=args.epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.lr_schedule,
        eval_every=args.eval_every,
        controls=controls,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    from netslim.jobs.lottery import lottery_job
    from netslim.jobs.preflight import check_out
    from netslim.jobs.settings import default_run_dir, resolve_data

    config = _config(args)  # bad settings fail here, before any data is read
    out = Path(args.out) if args.out else default_run_dir(args.model, "lottery")
    check_out(str(out))
    data = resolve_data(args.data, args.model)
    if data is None:
        raise ConfigError("netslim lottery trains in every round: give --data")
    lottery_job(
        data_settings(args, data),
        config,
        weights=args.weights,
        val_size=args.val_size,
        out=out,
        settings={k: v for k, v in vars(args).items() if k != "func"},
    )
    print(
        f"wrote {out}/lottery.json, lottery.png, the last ticket in {out}/ticket and "
        f"resumable checkpoints in {out}/checkpoints"
    )
    return 0
