"""``netslim llm MODEL_DIR --method ... --ratio R [--nm 2:4] --calib FILE --eval FILE --out DIR``.

Arguments -> the method family's config (``LLMWeights``, ``LLMWidth``, ``LLMDepth``); the job is
``netslim.jobs.llm``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from netslim.cli.args import (
    add_fraction,
    add_seed,
    fraction,
    name_offsets,
    nonnegative_int,
    positive_float,
    positive_int,
)
from netslim.llm.config import WEIGHT_METHODS
from netslim.llm.optim import TRAIN_DTYPES
from netslim.llm.reconstruct import OPTIMIZERS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("llm", help="one-shot pruning of a decoder-only LM, measured by perplexity")
    p.add_argument(
        "model",
        help="Hugging Face model directory (LLaMA/Mistral/Qwen2/GPT-2 family), or a GGUF file "
        "(dequantized to a float32 copy beside --out first, removed afterwards)",
    )
    p.add_argument(
        "--method", default="wanda", help="wanda | sparsegpt | magnitude | width | depth"
    )
    add_fraction(p, default=0.5, help="fraction removed, in [0, 1)")
    p.add_argument("--nm", default=None, help="N:M pattern for wanda/sparsegpt/magnitude, e.g. 2:4")
    p.add_argument(
        "--head-sparsity", type=fraction, default=None, help="width: fraction of KV groups"
    )
    p.add_argument(
        "--remove", type=positive_int, default=None, help="depth: number of blocks to remove"
    )
    p.add_argument(
        "--correct", action="store_true", help="width: least-squares refit (needs many tokens)"
    )
    p.add_argument(
        "--owl", type=fraction, default=0.0,
        help="unstructured per-weight methods: OWL non-uniform block sparsity, max shift λ (0.08)",
    )  # fmt: skip
    p.add_argument(
        "--sparsity-offsets", type=name_offsets, default=None, metavar="NAME=OFFSET,...",
        help="unstructured per-weight methods: prune the linears named so much more (or less), "
        "the block's others balance it (q_proj=0.15,k_proj=0.15)",
    )  # fmt: skip
    p.add_argument(
        "--reconstruct", type=nonnegative_int, default=0,
        help="per-weight methods: optimizer steps per block fitting it to the dense model (12)",
    )  # fmt: skip
    p.add_argument(
        "--reconstruct-optimizer", choices=OPTIMIZERS, default=None,
        help="default: adafactor with --stream (memory-light, lr relative to each tensor), "
        "adam otherwise (with --stream its moments go to a scratch file in the output folder)",
    )  # fmt: skip
    p.add_argument(
        "--reconstruct-lr", type=positive_float, default=None,
        help="reconstruction learning rate (default: the optimizer's, adam 1.5e-3, adafactor 1e-2)",
    )  # fmt: skip
    p.add_argument(
        "--recover", type=nonnegative_int, default=0,
        help="distillation steps from the dense model on the calibration text (200); per-weight "
        "methods keep their masks",
    )  # fmt: skip
    p.add_argument(
        "--train-dtype", choices=TRAIN_DTYPES, default="float32",
        help="precision of the reconstruction's and recovery's forward passes: bfloat16 "
        "(autocast, float32 weights) is faster where bf16 matrix units exist (CPUs with AMX)",
    )  # fmt: skip
    add_seed(p, help="order of the calibration sequences in --reconstruct and --recover")
    p.add_argument("--calib", default=None, help="calibration text file (UTF-8)")
    p.add_argument("--eval", default=None, help="evaluation text file for perplexity")
    p.add_argument(
        "--seq-len", type=positive_int, default=256, help="calibration and evaluation window"
    )
    p.add_argument(
        "--stride", type=positive_int, default=None, help="perplexity stride (default seq-len)"
    )
    p.add_argument("--calib-samples", type=positive_int, default=64, help="calibration sequences")
    p.add_argument(
        "--eval-tokens", type=positive_int, default=16384, help="evaluate the first N tokens"
    )
    p.add_argument("--stream", action="store_true", help="stream blocks from/to safetensors shards")
    p.add_argument("--out", required=True, help="output directory (Hugging Face layout)")
    return p


def run(args: argparse.Namespace) -> int:
    from netslim.jobs.llm import llm_job
    from netslim.llm.config import config_for

    config = config_for(
        args.method, sparsity=args.ratio, nm=args.nm, head_sparsity=args.head_sparsity,
        remove=args.remove, correct=args.correct, owl=args.owl,
        sparsity_offsets=args.sparsity_offsets, reconstruct=args.reconstruct,
        reconstruct_optimizer=args.reconstruct_optimizer, reconstruct_lr=args.reconstruct_lr,
        recover=args.recover, train_dtype=args.train_dtype, seed=args.seed,
    )  # fmt: skip
    report = llm_job(
        args.model,
        config,
        out=args.out,
        calib=args.calib,
        eval_text=args.eval,
        seq_len=args.seq_len,
        stride=args.stride,
        calib_samples=args.calib_samples,
        eval_tokens=args.eval_tokens,
        stream=args.stream,
    )
    _print(args, report)
    return 0


def _print(args: argparse.Namespace, report: dict[str, Any]) -> None:
    cfg = report["config"]
    what = f"N:M {cfg['nm']}" if cfg.get("nm") else f"sparsity {cfg['sparsity']:.2f}"
    print(f"netslim llm: {report['method']} ({what}) on {report['family']}, "
          f"blocks {report['blocks']['before']} -> {report['blocks']['after']}"
          + (" [streamed from disk]" if report.get("streamed") else ""))  # fmt: skip
    if "source" in report:
        source = report["source"]
        print(f"read {source['gguf']} (GGUF), dequantized to float32 in {source['seconds']:.1f} s")
    if "calibration" in report:
        c = report["calibration"]
        print(
            f"calibration: {c['sequences']} sequences x {c['seq_len']} tokens = {c['tokens']} tokens from {args.calib}"
        )
    if "params" in report:
        print(f"params: {report['params']['before']:,} -> {report['params']['after']:,}")
    if "sparsity" in report and report["config"]["method"] in WEIGHT_METHODS:
        print(f"zeros in block linear weights: {100 * report['sparsity']:.1f}%")
    for line in _new_step_lines(report):
        print(line)
    if report.get("removed_blocks") is not None:
        print(f"removed blocks (lowest Block Influence): {report['removed_blocks']}")
    if "perplexity" in report:
        p = report["perplexity"]["pruned"]
        print(f"perplexity protocol: windows of {p['seq_len']} tokens, stride {p['stride']}, "
              f"{p['tokens_scored']} tokens scored from the start of {args.eval}")  # fmt: skip
        dense = report["perplexity"].get("dense")
        before = f"dense {dense['ppl']:.3f} -> " if dense else ""
        print(f"perplexity: {before}pruned {p['ppl']:.3f}")
        print(f"generate(): {'ok' if report.get('generate_ok') else 'FAILED'}")
    how = (
        f"transformers.AutoModelForCausalLM.from_pretrained({args.out!r})"
        if report["loader"] == "transformers"
        else f"netslim.llm.load({args.out!r}) (blocks differ in width; config.json cannot say so)"
    )
    print(f"saved to {args.out}; reload with {how}")
    costs = report.get("costs") or {}
    if costs:  # the new steps report their own cost
        print(
            f"time: {report['seconds']:.1f} s, of which "
            + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in costs.items())
        )
    print(json.dumps({"seconds": round(report["seconds"], 1)}))


def _new_step_lines(report: dict[str, Any]) -> list[str]:
    """What OWL, block reconstruction and recovery did: without these lines a user sees the
    perplexity move but not which step moved it, nor whether a step's loss went down."""
    cfg, lines = report["config"], []
    if "owl" in report:
        sparsity = report["owl"]["block_sparsity"]
        lines.append(
            f"OWL (lambda {cfg['owl']:g}, M {cfg['owl_m']:g}): block sparsity "
            f"{min(sparsity):.2f}-{max(sparsity):.2f}, first block {sparsity[0]:.2f}"
        )
    if "reconstruction" in report:
        fit = report["reconstruction"]
        ratios = [b / a for a, b in zip(fit["first_loss"], fit["last_loss"], strict=True) if a > 0]
        lines.append(
            f"block reconstruction: {cfg['reconstruct']} steps per block of "
            f"{cfg['reconstruct_batch']} sequences; block-output error at the last step / the "
            f"first: {sum(ratios) / max(len(ratios), 1):.2f} (mean over blocks)"
        )
    if "recovery" in report:
        r = report["recovery"]
        lines.append(
            f"recovery: {r['steps']} steps, {r['tokens']:,} tokens; "
            f"KL(dense || pruned) {r['loss_first']:.3f} -> {r['loss_last']:.3f}"
        )
    return lines
