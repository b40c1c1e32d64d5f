"""Multiply-accumulate count of one forward pass, from ``torch.utils.flop_counter``.

``FlopCounterMode`` counts the FLOPs of matmuls, convolutions and attention from their shapes;
one multiply-accumulate is two FLOPs, so MACs = FLOPs / 2. Counts are dense: masked (zero)
weights still cost MACs, only physically removed channels reduce them.

Ops the counter has no formula for would count zero: the fused inference op of
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` (projections and attention: a
ViT-B/16 came out at 11.3 instead of 17.6 GMACs) and oneDNN's RNN layer (an LSTM counted
nothing), so the count turns those fused kernels off (``unfused_kernels``) and the regular path
computes the same with known ops; and the CPU kernel of ``scaled_dot_product_attention``, which
gets the formula of the other attention kernels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from netslim.core.unfused import unfused_kernels
from netslim.measure._call import call, inference


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """MACs of ``model`` on ``example_inputs`` (a tensor, a tuple of positional inputs or a
    dict of keyword inputs), in eval mode. The count is for the whole batch given: pass a batch
    of one for per-sample MACs."""
    try:
        return _count(model, example_inputs, grad=False)
    except AssertionError as exc:
        if "gradient function" not in str(exc):
            raise
        # the counter's module tracker hooks each module's inputs for backward; a view of a
        # parameter made under no_grad (transformers' Mamba hands its conv weight on so)
        # requires grad but has no grad_fn, which the hook refuses: count with grad on
        return _count(model, example_inputs, grad=True)


def _count(model: nn.Module, example_inputs: Any, *, grad: bool) -> int:
    counter = FlopCounterMode(display=False, custom_mapping=_MISSING_FORMULAS)
    with inference(model), torch.set_grad_enabled(grad), unfused_kernels(), counter:
        call(model, example_inputs)
    return counter.get_total_flops() // 2


def _cpu_attention_flops(query_shape, key_shape, value_shape, *_args, **_kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_MISSING_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
}
