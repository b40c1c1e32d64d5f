"""Multiply-accumulate count of one forward pass, from ``torch.utils.flop_counter``.

``FlopCounterMode`` counts the FLOPs of matmuls, convolutions and attention from their shapes;
one multiply-accumulate is two FLOPs, so MACs = FLOPs / 2. Counts are dense: masked (zero)
weights still cost MACs, only physically removed channels reduce them.

Two ops the counter has no formula for would count zero: the fused inference op of
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` (projections and attention: a
ViT-B/16 came out at 11.3 instead of 17.6 GMACs), so the count turns that fast path off and the
regular path computes the same with known ops; and the CPU kernel of
``scaled_dot_product_attention``, which gets the formula of the other attention kernels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

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
    with inference(model), torch.set_grad_enabled(grad), _unfused_attention(), counter:
        call(model, example_inputs)
    return counter.get_total_flops() // 2


def _cpu_attention_flops(query_shape, key_shape, value_shape, *_args, **_kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_MISSING_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
}


@contextmanager
def _unfused_attention() -> Iterator[None]:
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
