"""CPU (or GPU) forward latency with a fixed thread count, reported as median and IQR.

The median and inter-quartile range are robust to the odd slow run on a shared machine, where a
mean would be dragged by outliers. The thread count is pinned because latency scales with it and
restored afterwards so measuring has no side effect on the caller.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from netslim.core.batches import device_of
from netslim.errors import ConfigError
from netslim.measure._call import call, inference


@dataclass(frozen=True)
class LatencyStats:
    """Forward-pass times in milliseconds over ``repeats`` timed runs."""

    median: float
    q1: float
    q3: float
    iqr: float
    min: float
    repeats: int
    threads: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_ms(
    model: nn.Module,
    example_inputs: Any,
    *,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 30,
) -> LatencyStats:
    """Time ``repeats`` forward passes after ``warmup`` untimed ones (eval mode, no_grad)."""
    for name, value, low in (
        ("threads", threads, 1),
        ("warmup", warmup, 0),
        ("repeats", repeats, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"latency {name} must be an integer >= {low}, got {value!r}")
    device = device_of(model)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with inference(model):
            for _ in range(warmup):
                call(model, example_inputs)
            sync()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                call(model, example_inputs)
                sync()
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    if repeats > 1:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return LatencyStats(
        median=statistics.median(times),
        q1=q1,
        q3=q3,
        iqr=q3 - q1,
        min=min(times),
        repeats=repeats,
        threads=threads,
    )
