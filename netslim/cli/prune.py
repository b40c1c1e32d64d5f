"""``netslim prune MODEL``: its arguments and their mapping to :class:`JobSettings`; the job
itself is ``netslim.jobs.pipeline.run_job``."""

from __future__ import annotations

import argparse
from typing import Any

from netslim.cli.args import DATA_HELP, MODEL_HELP, add_data, parse_shape
from netslim.cli.latency import add_time_target_args


def add_training_args(p: argparse.ArgumentParser) -> None:
    add_data(p, data_help=f"{DATA_HELP} | none")
    p.add_argument(
        "--epochs", type=int, default=2, help="training epochs before pruning (untrained models)"
    )
    p.add_argument(
        "--finetune-epochs", type=int, default=1, help="fine-tuning epochs after each pruning step"
    )
    p.add_argument(
        "--distill",
        action="store_true",
        help="fine-tune with knowledge distillation from the unpruned model",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--out", default=None, help="output directory (default runs/<model>-<method>)")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    prune = sub.add_parser("prune", help="prune a model, fine-tune it, measure and save it")
    add_arguments(prune)
    return prune


def add_arguments(prune: argparse.ArgumentParser) -> None:
    """Every ``netslim prune`` argument (also used by ``netslim demo``)."""
    prune.add_argument("model", help=MODEL_HELP)
    prune.add_argument(
        "--method", default="unstructured", help="unstructured | channel | slimming | layer | gate"
    )
    prune.add_argument("--ratio", type=float, default=0.5, help="fraction to remove, in [0, 1)")
    prune.add_argument(
        "--scope", default="global", help="global | layer (unstructured); global | local (channel)"
    )
    prune.add_argument(
        "--criterion",
        default=None,
        help="unstructured: l1 l2 lamp random taylor fisher wanda; channel: l1 l2 lamp fpgm "
        "bn random taylor fisher wanda apoz activation (data-driven ones read --data); "
        "block-influence | branch-norm | ablation (layer)",
    )
    prune.add_argument("--nm", default=None, help="N:M semi-structured sparsity, e.g. 2:4")
    prune.add_argument("--schedule", default="oneshot", help="oneshot | iterative | agp")
    prune.add_argument(
        "--rounds", type=int, default=3, help="pruning rounds for --schedule iterative"
    )
    prune.add_argument(
        "--l1-reg", type=float, default=0.0, help="L1 penalty lambda during training"
    )
    prune.add_argument(
        "--l1-warmup", type=int, default=0, help="slimming: steps over which --l1-reg ramps up"
    )
    prune.add_argument(
        "--per-module",
        default=None,
        metavar="FILE",
        help="channel/slimming: JSON {module: ratio}, e.g. from netslim sensitivity",
    )
    prune.add_argument(
        "--target-macs", type=float, default=None, help="channel: keep this fraction of MACs"
    )
    prune.add_argument(
        "--target-latency",
        dest="target_latency_ms",
        type=float,
        default=None,
        metavar="MS",
        help="channel: widths chosen by a knapsack over this machine's latency table so the "
        "model runs in MS ms on --runtime (see netslim latency)",
    )
    prune.add_argument(
        "--target-speedup",
        type=float,
        default=None,
        metavar="X",
        help="channel: like --target-latency, X times faster than the unpruned model",
    )
    add_time_target_args(prune)
    prune.add_argument(
        "--round-to", type=int, default=1, help="channel: keep channel counts multiples of K"
    )
    prune.add_argument(
        "--remove", type=int, default=None, help="layer: remove N blocks (instead of --ratio)"
    )
    prune.add_argument(
        "--target-open",
        type=int,
        default=None,
        help="gate: blocks left open after gate training (default: half)",
    )
    prune.add_argument(
        "--per-input",
        action="store_true",
        help="gate: decide per sample which blocks run (closed blocks are skipped at batch 1)",
    )
    prune.add_argument("--ignore", nargs="*", default=[], help="module names never pruned")
    prune.add_argument(
        "--example-shape",
        type=parse_shape,
        default=None,
        help="example input shape, e.g. 1,3,224,224",
    )
    add_training_args(prune)
    prune.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="save a resumable checkpoint every N training steps (0: off)",
    )
    prune.add_argument(
        "--checkpoint-dir", default=None, help="where checkpoints go (default OUT/checkpoints)"
    )
    prune.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the run whose checkpoints are in DIR (same command and settings)",
    )
    prune.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="after fine-tuning, quantize to int8 (dynamic for Linear-only models, static with "
        "calibration for conv models) and write model_int8.onnx",
    )


def settings_from_args(args: argparse.Namespace):
    from netslim.jobs.pipeline import JobSettings

    data = None if args.data in (None, "none") else args.data
    method = args.method
    out = args.out or f"runs/{args.model.replace(':', '-').replace('/', '_')}-{method}"
    return JobSettings(
        model=args.model,
        method=method,
        ratio=args.ratio,
        scope=args.scope,
        criterion=args.criterion,
        nm=args.nm,
        schedule=args.schedule,
        rounds=args.rounds,
        l1_reg=args.l1_reg,
        l1_warmup=args.l1_warmup,
        per_module=args.per_module,
        data=data,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        distill=args.distill,
        target_macs=args.target_macs,
        target_latency_ms=args.target_latency_ms,
        target_speedup=args.target_speedup,
        runtime=args.runtime,
        threads=args.threads,
        batch=args.batch,
        round_to=args.round_to,
        remove=args.remove,
        target_open=args.target_open,
        per_input=args.per_input,
        ignore=list(args.ignore),
        example_shape=args.example_shape,
        latency=not args.no_latency,
        progress=not args.no_progress,
        out=out,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        quantize=args.quantize,
    )


def run(args: argparse.Namespace) -> int:
    from netslim.distributed import is_main, shutdown
    from netslim.jobs.pipeline import run_job
    from netslim.report import before_after_table

    settings = settings_from_args(args)
    try:
        report = run_job(settings)  # joins torchrun's process group when launched by it
        main_rank = is_main()
    finally:
        shutdown()
    if not main_rank:
        return 0
    print(before_after_table(report))
    print(
        f"\nwrote {settings.out}/report.json, report.png and the pruned model in {settings.out}/model"
    )
    return 0
