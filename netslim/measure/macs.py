"""Multiply-accumulate count of one forward pass, from ``torch.utils.flop_counter``.

``FlopCounterMode`` counts the FLOPs of matmuls, convolutions and attention from their shapes;
one multiply-accumulate is two FLOPs, so MACs = FLOPs / 2. Counts are dense: masked (zero)
weights still cost MACs, only physically removed channels reduce them.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from netslim.measure._call import call, inference


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """MACs of ``model`` on ``example_inputs`` (a tensor, a tuple of positional inputs or a
    dict of keyword inputs), in eval mode. The count is for the whole batch given: pass a batch
    of one for per-sample MACs."""
    with inference(model), FlopCounterMode(display=False) as counter:
        call(model, example_inputs)
    return counter.get_total_flops() // 2
