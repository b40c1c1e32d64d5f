"""Post-training int8 quantization (dynamic, static with calibration, QAT) of pruned models."""

from netslim.quantize.api import MODES, quantize_int8, resolve_mode
from netslim.quantize.report import QuantizationWarning, QuantizeReport

__all__ = ["MODES", "QuantizationWarning", "QuantizeReport", "quantize_int8", "resolve_mode"]
