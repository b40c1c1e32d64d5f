"""``netslim compress``, ``netslim run`` and ``netslim export``: the deployment commands' arguments
and handlers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from netslim.cli.args import add_trust_code, parse_shape


def add_compress(sub: Any) -> argparse.ArgumentParser:
    from netslim.compress import POSITION_MODES, VALUE_MODES

    comp = sub.add_parser(
        "compress", help="write a compressed artifact (sparse positions + int8/fp16 values + zstd)"
    )
    comp.add_argument("directory", help="a saved model directory (or a prune job's directory)")
    comp.add_argument(
        "--values",
        default="int8-channel",
        choices=VALUE_MODES,
        help="how non-zero values are stored: exact is lossless; int8-channel (one scale per "
        "output channel) and the others are lossy",
    )
    comp.add_argument(
        "--positions", default="auto", choices=POSITION_MODES, help="how zero positions are stored"
    )
    comp.add_argument(
        "--level",
        type=int,
        choices=range(1, 23),
        default=19,
        help="zstd level (1-22)",
        metavar="1..22",
    )
    comp.add_argument("--out", default=None, help="output file (default: DIRECTORY/model.nsz)")
    add_trust_code(comp)
    return comp


def add_run(sub: Any) -> argparse.ArgumentParser:
    run = sub.add_parser("run", help="run a YAML recipe (prune → fine-tune → quantize → ...)")
    run.add_argument("recipe", help="a recipe file; see docs/quantize.md")
    add_trust_code(run)
    return run


def add_export(sub: Any) -> argparse.ArgumentParser:
    exp = sub.add_parser("export", help="export a saved model to ONNX (+int8) / torch.export")
    exp.add_argument("directory", help="a saved model directory (or a prune job's directory)")
    exp.add_argument("--out", default=None, help="output folder (default: DIRECTORY/export)")
    exp.add_argument("--int8", action="store_true", help="also write an onnxruntime int8 model")
    exp.add_argument("--program", action="store_true", help="also write a torch.export .pt2")
    exp.add_argument(
        "--hf",
        action="store_true",
        help="Hugging Face models: also write OUT/hf with save_pretrained (the config follows "
        "the pruned sizes; bypassed layers are deleted), loadable by from_pretrained (per-layer "
        "widths: after import netslim.export.hf_shapes)",
    )
    exp.add_argument(
        "--example-shape",
        type=parse_shape,
        default=None,
        help="example input shape, e.g. 1,1,28,28 (default: the prune job's, else the model's)",
    )
    add_trust_code(exp)
    return exp


def _model_dir(directory: str) -> Path:
    from netslim.jobs.evaluation import locate

    return locate(Path(directory))[0]


def run_compress(args: argparse.Namespace) -> int:
    from netslim.compress import compress
    from netslim.io import load

    model_dir = _model_dir(args.directory)
    out = Path(args.out) if args.out else Path(args.directory) / "model.nsz"
    report = compress(
        load(model_dir, trust_code=args.trust_code),
        out,
        values=args.values,
        positions=args.positions,
        level=args.level,
    )
    print(
        f"wrote {report.path}: {report.bytes} bytes, {report.ratio:.1f}x smaller than the dense "
        f"float32 checkpoint ({report.dense_fp32_bytes} bytes); values {report.values}"
        f"{' (lossless)' if report.values == 'exact' else ' (lossy)'}; weight sparsity "
        f"{report.sparsity:.1%}"
    )
    return 0


def run_recipe(args: argparse.Namespace) -> int:
    from netslim.jobs.recipe import load_recipe, run_recipe
    from netslim.models.spec import build_from_spec, code_to_run

    recipe = load_recipe(args.recipe)
    spec = {"source": recipe.settings.model}
    if code_to_run(spec) and not args.trust_code:  # a recipe is a file someone may have sent
        build_from_spec(spec, origin=f"recipe {args.recipe}")  # raises, naming the file
    from netslim.report import time_target_lines

    report = run_recipe(recipe)
    for step in report["steps"]:
        acc = step.get("accuracy")
        extra = f" accuracy {100 * acc:.2f}%" if isinstance(acc, float) else ""
        if "ratio" in step:
            extra += f" {step['bytes']} bytes ({step['ratio']:.1f}x)"
        print(f"line {step['line']}: {step['step']}{extra}")
        for line in time_target_lines([step.get("summary") or {}]):  # a time target's plan
            print(f"  {line}")
    print("wrote the model and recipe_report.json to the recipe's out folder")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from netslim._runtime import ROOT_LOG, quiet_log
    from netslim.errors import ConfigError
    from netslim.export import export_onnx, export_program, max_abs_diff, quantize_onnx
    from netslim.io import load
    from netslim.jobs.evaluation import job_example_shape, locate, write_export_job
    from netslim.layers import RoutedBlock
    from netslim.models.spec import make_example_inputs

    model_dir, report = locate(Path(args.directory))
    model = load(model_dir, trust_code=args.trust_code)
    if args.hf and not hasattr(model, "save_pretrained"):
        raise ConfigError(f"--hf writes Hugging Face models; {type(model).__name__} is not one")
    out = Path(args.out) if args.out else Path(args.directory) / "export"
    shape = args.example_shape or job_example_shape(report)  # the shape the job ran at
    inputs = make_example_inputs(model, shape)
    result = {"onnx": export_onnx(model, inputs, out / "model.onnx").as_dict()}
    result["job"] = str(write_export_job(out, model_dir, report))  # what eval reads beside it
    if args.int8:
        with quiet_log(ROOT_LOG):
            path = quantize_onnx(out / "model.onnx", out / "model_int8.onnx", mode="dynamic")
        result["onnx_int8"] = {
            "path": str(path),
            "max_abs_diff_vs_fp32": max_abs_diff(model, path, inputs),
        }
    if args.program:
        diff = export_program(model, inputs, out / "model.pt2")
        result["program"] = {"path": str(out / "model.pt2"), "max_abs_diff": diff}
    if args.hf:
        from netslim.export import save_pretrained_pruned

        result["hf"] = {
            "path": str(out / "hf"),
            "config": save_pretrained_pruned(model, out / "hf"),
        }
    if any(isinstance(m, RoutedBlock) for m in model.modules()):
        result["note"] = (
            "per-input gates: the exports run every gated block for every sample and keep each "
            "sample's output by its gate (the same outputs); blocks are skipped per sample only "
            "in eager PyTorch"
        )
    print(json.dumps(result, indent=2, default=str))
    return 0
