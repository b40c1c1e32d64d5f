"""Data for data-driven importance criteria: a calibration set, and the statistics the criteria
read from it (gradients for Taylor/Fisher, input norms for Wanda, output activations for
APoZ/mean activation). Shared by unstructured and structural criteria."""

from netslim.importance.calibration import (
    Calibration,
    batch_samples,
    calibration_from,
    forward,
    iter_batches,
    require,
)
from netslim.importance.stats import activation_stats, gradient_stats, input_norms

__all__ = [
    "Calibration",
    "activation_stats",
    "batch_samples",
    "calibration_from",
    "forward",
    "gradient_stats",
    "input_norms",
    "iter_batches",
    "require",
]
