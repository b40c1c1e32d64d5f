"""Fused kernels off: the ops a fused kernel hides are what structural analysis traces and
what a MACs count must see."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def unfused_kernels() -> Iterator[None]:
    """Run the decomposed paths of fused kernels; the model may use the fused ones again
    afterwards. nn.MultiheadAttention's fast path is one; oneDNN's RNN layer, what
    nn.LSTM/nn.GRU call on CPU, is another (one opaque op for every gate's matmul): it is
    switched off while an RNN module runs, and only then, so convolutions keep their kernels."""
    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )

    saved: list[bool] = []

    def rnn_in(mod: nn.Module, _a: Any) -> None:
        if isinstance(mod, nn.RNNBase):
            saved.append(torch.backends.mkldnn.enabled)
            torch.backends.mkldnn.enabled = False

    def rnn_out(mod: nn.Module, _a: Any, _out: Any) -> None:
        if isinstance(mod, nn.RNNBase) and saved:
            torch.backends.mkldnn.enabled = saved.pop()

    mha = getattr(torch.backends, "mha", None)
    old = mha.get_fastpath_enabled() if mha is not None else None
    if mha is not None:
        mha.set_fastpath_enabled(False)
    handles = [
        register_module_forward_pre_hook(rnn_in),
        register_module_forward_hook(rnn_out, always_call=True),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        if saved:
            torch.backends.mkldnn.enabled = saved[0]
        if mha is not None:
            mha.set_fastpath_enabled(old)
