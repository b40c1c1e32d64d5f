"""``netslim prune MODEL``: its arguments and their mapping to :class:`JobSettings`; the job
itself is ``netslim.jobs.pipeline.run_job``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netslim.cli.args import (
    DATA_HELP,
    DEFAULTS,
    EPOCHS_HELP,
    add_data,
    add_data_source,
    add_fraction,
    add_model,
    choice,
    fraction,
    kept_fraction,
    nonnegative_float,
    nonnegative_int,
    parse_shape,
    positive_float,
    positive_int,
)
from netslim.cli.latency import add_time_target_args, apply_time_target_args


def add_training_args(p: argparse.ArgumentParser) -> None:
    add_data(p, data_help=f"{DATA_HELP} | none")
    add_data_source(p)
    p.add_argument("--epochs", type=nonnegative_int, default=DEFAULTS["epochs"], help=EPOCHS_HELP)
    p.add_argument(
        "--finetune-epochs",
        type=nonnegative_int,
        default=1,
        help="fine-tuning epochs after each pruning step",
    )
    p.add_argument(
        "--distill",
        action="store_true",
        help="fine-tune with knowledge distillation from the unpruned model",
    )
    p.add_argument(
        "--dense-baseline",
        action="store_true",
        help="also train a dense copy for the extra epochs the pruned model gets, and report "
        "its accuracy (otherwise the report says that 'after' had more training)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars and epoch lines")
    p.add_argument("--out", default=None, help="output directory (default: runs/<model>-<method>)")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    prune = sub.add_parser("prune", help="prune a model, fine-tune it, measure and save it")
    add_arguments(prune)
    return prune


def add_arguments(prune: argparse.ArgumentParser) -> None:
    """Every ``netslim prune`` argument (also used by ``netslim demo``). Which method reads
    which flag is the method packages' business (``MethodSpec.flags``): a flag the chosen
    method does not read is an error naming it."""
    from netslim.jobs.settings import SCHEDULES
    from netslim.methods import JOB_METHODS

    add_model(prune)
    prune.add_argument(
        "--method",
        type=choice(*JOB_METHODS, what="method"),
        default="unstructured",
        help=" | ".join(JOB_METHODS),
    )
    add_fraction(prune, default=0.5, help="fraction removed (weights, channels or blocks)")
    prune.add_argument(
        "--scope",
        default="global",
        help="global | layer (unstructured); global | local (channel); slimming is global",
    )
    prune.add_argument(
        "--criterion",
        default=None,
        help="unstructured: l1 l2 lamp random taylor fisher wanda (default l1); channel: l1 l2 "
        "lamp fpgm bn random taylor fisher wanda apoz activation (default l2; slimming: bn); "
        "layer: block-influence | branch-norm | ablation (default block-influence); "
        "data-driven ones read --data",
    )
    prune.add_argument("--nm", default=None, help="unstructured: N:M sparsity, e.g. 2:4")
    prune.add_argument(
        "--schedule",
        type=choice(*SCHEDULES, what="schedule"),
        default="oneshot",
        help="pruning schedule: " + " | ".join(SCHEDULES) + " (agp: unstructured only)",
    )
    prune.add_argument(
        "--rounds", type=positive_int, default=3, help="pruning rounds of --schedule iterative"
    )
    prune.add_argument(
        "--agp-start",
        type=fraction,
        default=0.0,
        help="--schedule agp: mask this sparsity before the first step and raise it to --ratio "
        "(default 0: from dense; 0.8 for --ratio 0.95 won in docs/recovery.md)",
    )
    prune.add_argument(
        "--l1-reg",
        type=nonnegative_float,
        default=0.0,
        help="L1 penalty during training (slimming: on BN scales; needed for network slimming)",
    )
    prune.add_argument(
        "--l1-warmup",
        type=nonnegative_int,
        default=0,
        help="slimming: steps over which --l1-reg ramps up",
    )
    prune.add_argument(
        "--per-module",
        default=None,
        metavar="FILE",
        help="channel/slimming: JSON {module: ratio}, e.g. from netslim sensitivity",
    )
    prune.add_argument(
        "--target-macs",
        type=kept_fraction,
        default=None,
        help="channel: keep this fraction of MACs",
    )
    prune.add_argument(
        "--target-latency",
        dest="target_latency_ms",
        type=positive_float,
        default=None,
        metavar="MS",
        help="channel: widths chosen by a knapsack over this machine's latency table so the "
        "model runs in MS ms on --runtime (see netslim latency)",
    )
    prune.add_argument(
        "--target-speedup",
        type=positive_float,
        default=None,
        metavar="X",
        help="channel: like --target-latency, X times faster than the unpruned model",
    )
    add_time_target_args(prune)
    prune.add_argument(
        "--blocks",
        action="store_true",
        help="channel, with --target-latency/--target-speedup: the plan may also remove whole "
        "residual blocks, chosen against widths by the time they save and, with data, by what "
        "bypassing each costs (docs/latency.md)",
    )
    prune.add_argument(
        "--round-to",
        type=positive_int,
        default=1,
        help="channel: keep channel counts multiples of K (a time target on onnxruntime also "
        "keeps whole layout blocks of 8, or 16 with AVX-512)",
    )
    prune.add_argument(
        "--reconstruct",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="unstructured/channel/slimming: after pruning, refit the pruned layers by least "
        "squares to the dense model's outputs on --data batches (no labels; BN re-estimated). "
        "Default (the API's too, reconstruct=None): with --data, on for channel/slimming, and "
        "for unstructured when --finetune-epochs is 0 (docs/recovery.md)",
    )
    prune.add_argument(
        "--remove",
        type=positive_int,
        default=None,
        help="layer: remove N blocks (instead of --ratio)",
    )
    prune.add_argument(
        "--target-open",
        type=nonnegative_int,
        default=None,
        help="gate: blocks left open after gate training (default: half)",
    )
    prune.add_argument(
        "--per-input",
        action="store_true",
        help="gate: decide per sample which blocks run (closed blocks are skipped at batch 1)",
    )
    prune.add_argument(
        "--ignore",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="modules whose outputs keep their width (unstructured: left unpruned); for channel "
        "pruning their inputs may still shrink with the layer before, as Torch-Pruning's "
        "ignored_layers (see --freeze)",
    )
    prune.add_argument(
        "--freeze",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="channel/slimming: modules left entirely alone, inputs included (so the layer "
        "feeding them keeps its outputs too)",
    )
    prune.add_argument(
        "--keep-masks",
        action="store_true",
        help="unstructured: save the masks attached (to resume pruning) instead of folding "
        "them into sparse weights",
    )
    prune.add_argument(
        "--example-shape",
        type=parse_shape,
        default=None,
        help="example input shape, e.g. 1,3,224,224 (default: one sample of --data, else the "
        "model's usual input)",
    )
    add_training_args(prune)
    prune.add_argument(
        "--checkpoint-every",
        type=nonnegative_int,
        default=0,
        help="save a resumable checkpoint every N training steps (0: off)",
    )
    prune.add_argument(
        "--checkpoint-dir", default=None, help="where checkpoints go (default: OUT/checkpoints)"
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
        "calibration for conv models), write model_int8.onnx and the compressed model.nsz",
    )


def settings_from_args(args: argparse.Namespace):
    from netslim.jobs.settings import JobSettings, default_run_dir

    data = args.data
    method = args.method
    out = args.out or str(default_run_dir(args.model, method))
    return JobSettings(
        model=args.model,
        method=method,
        ratio=args.ratio,
        scope=args.scope,
        criterion=args.criterion,
        nm=args.nm,
        schedule=args.schedule,
        rounds=args.rounds,
        agp_start=args.agp_start,
        l1_reg=args.l1_reg,
        l1_warmup=args.l1_warmup,
        per_module=args.per_module,
        data=data,
        val_split=args.val_split,
        image_column=args.image_column,
        text_column=args.text_column,
        label_column=args.label_column,
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
        blocks=args.blocks,
        reconstruct=args.reconstruct,
        remove=args.remove,
        target_open=args.target_open,
        per_input=args.per_input,
        ignore=list(args.ignore),
        freeze=list(args.freeze),
        example_shape=args.example_shape,
        latency=not args.no_latency,
        progress=not args.no_progress,
        out=out,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        quantize=args.quantize,
        weights=args.weights,
        keep_masks=args.keep_masks,
        dense_baseline=args.dense_baseline,
    )


def run(args: argparse.Namespace) -> int:
    from netslim.distributed import is_main, shutdown
    from netslim.jobs.pipeline import run_job
    from netslim.report import before_after_table

    settings = settings_from_args(args)
    apply_time_target_args(args)
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
        + "".join(f", {Path(path).name}" for path in _artifacts(report))
    )
    return 0


def _artifacts(report: dict[str, Any]) -> list[str]:
    """The files a job wrote beside its model: ``--quantize int8``'s exports, the compressed
    model."""
    quantize = report.get("quantize") or {}
    found = [quantize.get("torch_int8")]
    found += [(quantize.get(k) or {}).get("path") for k in ("onnx", "onnx_int8")]
    found.append((report.get("compressed") or {}).get("path"))
    return [path for path in found if path]
