"""The ``--quantize int8`` step of ``netslim prune``: int8 after fine-tuning, measured, exported.

The deployable int8 artifact of a job is ``model_int8.onnx`` (onnxruntime's quantizer on the
float export), written beside the float ``model/``. A dynamic int8 torch model (Linear-only
networks) is also saved as ``model_int8/`` (``netslim.load`` rebuilds it exactly); a static one
is a captured graph that only ONNX or ``torch.export`` can carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from netslim._runtime import ROOT_LOG, quiet_log
from netslim.errors import NetslimError

QUANTIZE_CHOICES = ("int8",)


def quantize_job(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    train_loader: Any,
    test_loader: Any,
    out: Path,
    latency: bool,
) -> dict[str, Any]:
    from netslim.measure import latency_ms
    from netslim.quantize import quantize_int8
    from netslim.training import evaluate

    quantized, report = quantize_int8(
        model, example_inputs=example_inputs, calibration=train_loader
    )
    result: dict[str, Any] = {"int8": report.as_dict()}
    if report.mode == "dynamic":
        from netslim.io import save

        result["torch_int8"] = str(save(quantized, out / "model_int8"))
    if test_loader is not None:
        result["accuracy_int8"] = evaluate(quantized, test_loader)
    if latency:
        result["latency_ms_int8_eager"] = latency_ms(quantized, example_inputs).median
    try:
        from netslim.export import export_onnx, max_abs_diff, quantize_onnx

        onnx = export_onnx(model, example_inputs, out / "model.onnx")
        mode = "static" if report.mode in ("static", "qat") else "dynamic"
        with quiet_log(ROOT_LOG):  # onnxruntime's quantizer advises on the root logger
            path = quantize_onnx(
                onnx.path, out / "model_int8.onnx", mode=mode, calibration=train_loader
            )
        result["onnx"] = onnx.as_dict()
        result["onnx_int8"] = {
            "path": str(path),
            "bytes": path.stat().st_size,
            "max_abs_diff_vs_fp32": max_abs_diff(model, path, example_inputs),
        }
    except (NetslimError, ImportError) as exc:
        result["onnx_int8"] = {"skipped": str(exc)}
    return result
