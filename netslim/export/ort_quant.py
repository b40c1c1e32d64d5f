"""int8 ONNX models through onnxruntime's own quantizer.

torchao's int8 graphs do not export to ONNX, so the deployable int8 ONNX model is made from the
float export: ``quantize_dynamic`` (int8 weights, activations quantized at run time) for
Linear-heavy models and ``quantize_static`` (QDQ, per-channel weights, calibrated activations)
for conv models. Both are maintained by the onnxruntime project and run on its CPU kernels.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of input tuples."""

    def __init__(self, names: list[str], batches: list[tuple[Any, ...]]):
        self._feeds = iter(
            [{n: np.asarray(x) for n, x in zip(names, batch, strict=True)} for batch in batches]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_onnx(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    mode: str = "dynamic",
    calibration: Iterable[Any] | None = None,
    batches: int = 8,
) -> Path:
    """Write an int8 version of the float ONNX model ``source`` to ``target``."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from netslim.export.onnx import session

    target = Path(target)
    if mode == "dynamic":
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        return target
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared))  # shape inference + graph clean-up
    names = [i.name for i in session(prepared).get_inputs()]
    data: list[tuple[Any, ...]] = []
    for batch in calibration or []:
        if len(data) >= batches:
            break
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        data.append(
            tuple(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in inputs)
        )
    quantize_static(
        str(prepared),
        str(target),
        _Reader(names, data),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepared.unlink(missing_ok=True)
    return target
