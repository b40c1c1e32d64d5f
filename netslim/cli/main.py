"""``netslim`` command line: argument parsing only; the work lives in ``netslim.pipeline``.

Every user-fixable error (:class:`netslim.errors.NetslimError`) becomes one line on stderr and
exit code 2, with no traceback; under ``torchrun`` the line says which rank speaks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from netslim.cli.args import DATA_HELP, MODEL_HELP, add_data, parse_shape
from netslim.errors import NetslimError


def _add_training_args(p: argparse.ArgumentParser) -> None:
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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netslim", description="Model pruning and network slimming for PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    prune = sub.add_parser("prune", help="prune a model, fine-tune it, measure and save it")
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
        help="channel: prune until the example input runs in MS ms on this CPU (1 thread)",
    )
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
    _add_training_args(prune)
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

    demo = sub.add_parser(
        "demo",
        help="the main job: train the reference CNN on Fashion-MNIST, prune, fine-tune, report",
    )
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--data", default="fashion-mnist")
    demo.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("eval", help="re-measure a saved result")
    ev.add_argument("directory", help="a directory written by netslim prune (or its model/ folder)")
    ev.add_argument(
        "--data",
        default=None,
        help="data to measure accuracy on (default: the one used for pruning)",
    )
    ev.add_argument("--limit-test", type=int, default=None)
    ev.add_argument("--example-shape", type=parse_shape, default=None)
    ev.add_argument("--no-latency", action="store_true")
    _add_lottery(sub)
    _add_deploy(sub, prune)
    _add_llm(sub)
    _add_sensitivity(sub)
    return parser


def _settings_from_args(args: argparse.Namespace):
    from netslim.pipeline import JobSettings

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


def _cmd_prune(args: argparse.Namespace) -> int:
    from netslim.distributed import is_main, shutdown
    from netslim.pipeline import run_job
    from netslim.report import before_after_table

    settings = _settings_from_args(args)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from netslim.pipeline import DEMO_ARGS

    return main(
        ["prune", *DEMO_ARGS, "--data", args.data, "--out", args.out]
        + (["--no-progress"] if args.no_progress else [])
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    from netslim.evaluation import evaluate_saved
    from netslim.report import before_after_table

    result = evaluate_saved(
        Path(args.directory),
        data=args.data,
        limit_test=args.limit_test,
        example_shape=args.example_shape,
        latency=not args.no_latency,
    )
    print(json.dumps(result["measured"], indent=2))
    if "report" in result:
        print(before_after_table(result["report"]))
    return 0


def _add_lottery(sub: argparse._SubParsersAction) -> None:
    """``netslim lottery``: its arguments and job live in ``netslim.lottery.cli``."""
    from netslim.lottery.cli import add_parser

    add_parser(sub)


def _cmd_lottery(args: argparse.Namespace) -> int:
    from netslim.lottery.cli import run

    return run(args)


def _add_deploy(sub: argparse._SubParsersAction, prune: argparse.ArgumentParser) -> None:
    """``prune --quantize``, ``compress``, ``run``, ``export``: they live in ``netslim.cli.deploy``."""
    from netslim.cli.deploy import add_parsers, add_quantize_flag

    add_quantize_flag(prune)
    add_parsers(sub)


def _cmd_deploy(args: argparse.Namespace) -> int:
    from netslim.cli.deploy import run

    return run(args)


def _add_llm(sub: argparse._SubParsersAction) -> None:
    """``netslim llm``: its arguments and job live in ``netslim.llm.cli``."""
    from netslim.llm.cli import add_parser

    add_parser(sub)


def _cmd_llm(args: argparse.Namespace) -> int:
    from netslim.llm.cli import run

    return run(args)


def _add_sensitivity(sub: argparse._SubParsersAction) -> None:
    """``netslim sensitivity``: its arguments and job live in ``netslim.sensitivity.cli``."""
    from netslim.sensitivity.cli import add_parser

    add_parser(sub)


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from netslim.sensitivity.cli import run

    return run(args)


COMMANDS = {
    "prune": _cmd_prune,
    "demo": _cmd_demo,
    "eval": _cmd_eval,
    "lottery": _cmd_lottery,
    "llm": _cmd_llm,
    "sensitivity": _cmd_sensitivity,
}
COMMANDS.update({"compress": _cmd_deploy, "run": _cmd_deploy, "export": _cmd_deploy})


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except NetslimError as exc:
        print(f"netslim: error: {_rank_prefix()}{exc}", file=sys.stderr)
        return 2


def _rank_prefix() -> str:
    import os

    world = os.environ.get("WORLD_SIZE")
    if world and world != "1":
        return f"[rank {os.environ.get('RANK', '?')}/{world}] "
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
