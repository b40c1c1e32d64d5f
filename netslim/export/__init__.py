"""Deployment exports: ONNX (+ int8 through onnxruntime), ``torch.export`` programs and Hugging
Face ``save_pretrained`` for structurally pruned models."""

from netslim.export.hf import inferred_sizes, save_pretrained_pruned, sync_config
from netslim.export.onnx import OnnxReport, export_onnx, max_abs_diff, session
from netslim.export.ort_quant import quantize_onnx
from netslim.export.program import export_program

__all__ = [
    "OnnxReport",
    "export_onnx",
    "export_program",
    "inferred_sizes",
    "max_abs_diff",
    "quantize_onnx",
    "save_pretrained_pruned",
    "session",
    "sync_config",
]
