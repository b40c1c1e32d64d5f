"""Measure a model: parameters, non-zero parameters, MACs, CPU latency, file size, accuracy.

Every report and benchmark goes through this package so that "before" and "after" numbers are
always computed the same way. Masked weights are measured through their parametrizations, i.e.
as the *effective* tensors the forward pass uses.
"""

from netslim.measure.counts import count_nonzero_params, count_params
from netslim.measure.effective import effective_named_parameters, effective_state_dict
from netslim.measure.latency import LatencyStats, latency_ms
from netslim.measure.macs import count_macs
from netslim.measure.size import saved_size_bytes
from netslim.measure.summary import accuracy, measure

__all__ = [
    "LatencyStats",
    "accuracy",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "effective_named_parameters",
    "effective_state_dict",
    "latency_ms",
    "measure",
    "saved_size_bytes",
]
