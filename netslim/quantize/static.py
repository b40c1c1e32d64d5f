"""Static int8 with calibration (and quantization-aware training) through PT2E.

The model is captured with ``torch.export`` (batch dimension dynamic), annotated by torchao's
``X86InductorQuantizer`` (per-channel int8 weights, uint8 activations, conv+BN folded), observed
on calibration batches and converted. This is the maintained successor of FX graph-mode
quantization; the converted graph runs eagerly as a float reference with quantize/dequantize
ops, and ``torch.compile`` (Inductor) lowers it to real int8 CPU kernels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from netslim.quantize.report import QuantizeReport, weighted_modules

BACKEND = "torchao.pt2e(X86InductorQuantizer)"
_WEIGHTED_OPS = ("conv1d", "conv2d", "conv3d", "linear", "conv_transpose2d", "embedding")
_DEQUANT = ("dequantize_per_channel", "dequantize_per_tensor")


def _quantizer(is_qat: bool):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=is_qat))
    return quantizer


def capture(model: nn.Module, example_inputs: tuple[Any, ...]) -> torch.fx.GraphModule:
    """``torch.export`` with a dynamic batch dimension, as a runnable GraphModule."""
    from netslim.core.batches import batch_of_two

    example_inputs = tuple(batch_of_two(x) for x in example_inputs)
    dims = tuple(
        {0: torch.export.Dim.AUTO} if isinstance(x, torch.Tensor) and x.dim() else None
        for x in example_inputs
    )
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    module = torch.export.export(model, example_inputs, dynamic_shapes=dims).module()
    allow_exported_model_train_eval(module)  # so .train()/.eval() (used by netslim.training) work
    _one_partition_per_call(module)
    return module


def _one_partition_per_call(module: torch.fx.GraphModule) -> None:
    """Tell apart the calls of a module that runs more than once (torchvision's ResNet blocks
    call one ``relu`` twice).

    The quantizer groups nodes into patterns by the module they came from; for a non-strict
    export torch names that module by its path, which both calls share, so the pair became one
    pattern with two outputs and the quantizer raised "Input partition has more than one output
    node". The export's own key for the second call ends in ``@1``: it goes on the path too (and
    ``_op_module`` takes it off again)."""
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        key, (path, cls) = list(stack.items())[-1]
        call = key.rpartition("@")[2] if "@" in key else ""
        if call.isdigit() and not path.endswith(f"@{call}"):
            node.meta["nn_module_stack"] = {**stack, key: (f"{path}@{call}", cls)}


def _op_module(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0].partition("@")[0]  # a call's index: see capture
    return path.removeprefix("L['self'].").removeprefix("L__self__.")


def fill_report(original: nn.Module, converted: torch.fx.GraphModule, report: QuantizeReport):
    """Which weighted layers got an int8 weight, read from the converted graph."""
    quantized: set[str] = set()
    for node in converted.graph.nodes:
        if node.op != "call_function":
            continue
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if op not in _WEIGHTED_OPS or len(node.args) < 2:
            continue
        weight = node.args[0] if op == "embedding" else node.args[1]
        is_q = isinstance(weight, torch.fx.Node) and any(d in str(weight.target) for d in _DEQUANT)
        name = _op_module(node)
        if is_q and name is not None:
            quantized.add(name)
    for name, module in weighted_modules(original).items():
        if name in quantized:
            report.quantized.append(name)
        else:
            report.kept_float[name] = f"{type(module).__name__}: not quantized by {BACKEND}"


def calibrate(model: nn.Module, batches: Iterable[Any], limit: int) -> int:
    seen = 0
    with torch.no_grad():
        for batch in batches:
            if seen >= limit:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs)
            seen += 1
    return seen


def quantize_static(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    calibration: Iterable[Any] | None,
    report: QuantizeReport,
    *,
    batches: int = 8,
) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(capture(model.eval(), example_inputs), _quantizer(is_qat=False))
    seen = calibrate(prepared, calibration or [example_inputs], batches)
    if calibration is None:
        report.notes.append("calibrated on the example inputs only: pass calibration data")
    report.notes.append(f"calibration batches: {seen}")
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)
    fill_report(model, converted, report)
    return converted


def quantize_qat(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    train_loader: Iterable[Any],
    report: QuantizeReport,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    teacher: nn.Module | None = None,
) -> torch.fx.GraphModule:
    """Fake-quantize, fine-tune (optionally distilling from ``teacher``), then convert."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from netslim.training import train

    model.train()
    prepared = prepare_qat_pt2e(capture(model, example_inputs), _quantizer(is_qat=True))
    allow_exported_model_train_eval(prepared)
    result = train(prepared, train_loader, epochs=epochs, lr=lr, teacher=teacher, progress=False)
    prepared.eval()
    report.notes.append(f"quantization-aware fine-tuning: {result.steps} steps, lr {lr}")
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)
    converted.eval()
    fill_report(model, converted, report)
    return converted
