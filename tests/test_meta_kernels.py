"""The fast meta shortcuts must agree with torch's own meta kernels, and step aside for calls
that torch would reject (validation relies on those errors)."""

from __future__ import annotations

import pytest
import torch

from netslim.structural.meta_kernels import SHORTCUTS, meta_shortcut

aten = torch.ops.aten


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


CASES = [
    (aten.native_batch_norm.default, (_meta(2, 8, 5, 5), _meta(8), _meta(8), _meta(8), _meta(8), False, 0.1, 1e-5)),
    (aten._native_batch_norm_legit_no_training.default, (_meta(2, 8, 5), _meta(8), _meta(8), _meta(8), _meta(8), 0.1, 1e-5)),
    (aten.native_layer_norm.default, (_meta(2, 7, 16), [16], _meta(16), _meta(16), 1e-5)),
    (aten.native_layer_norm.default, (_meta(3, 4, 6), [4, 6], None, None, 1e-5)),
    (aten.addmm.default, (_meta(12), _meta(5, 16), _meta(16, 12))),
    (aten.addmm.default, (_meta(5, 12), _meta(5, 16), _meta(16, 12))),
    (aten.gelu.default, (_meta(4, 9),)),
    (aten.silu.default, (_meta(4, 9),)),
    (aten.rsqrt.default, (_meta(3, 1),)),
    (aten.add.Tensor, (_meta(4, 9), _meta(4, 9))),
    (aten.mul.Tensor, (_meta(4, 9), 0.5)),
    (aten.add.Scalar, (_meta(4, 9), 2)),
]  # fmt: skip


@pytest.mark.parametrize("func,args", CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CASES)])
def test_shortcut_matches_torch_meta_kernel(func, args) -> None:
    fast = meta_shortcut(func, args, {})
    assert fast is not None, "this plain case should be covered"
    slow = func(*args)
    fast = fast if isinstance(fast, tuple) else (fast,)
    slow = slow if isinstance(slow, tuple) else (slow,)
    assert len(fast) == len(slow)
    # the main output must match exactly; batch-norm statistics are empty as on the CPU kernel
    assert fast[0].shape == slow[0].shape
    assert fast[0].dtype == slow[0].dtype
    assert fast[0].stride() == slow[0].stride()
    if func == aten.native_layer_norm.default:
        assert [t.shape for t in fast] == [t.shape for t in slow]


INVALID = [
    (aten.addmm.default, (_meta(12), _meta(5, 16), _meta(15, 12))),  # inner dims differ
    (aten.addmm.default, (_meta(11), _meta(5, 16), _meta(16, 12))),  # bias does not broadcast
    (aten.native_layer_norm.default, (_meta(2, 7, 16), [16], _meta(15), _meta(16), 1e-5)),
    (aten.native_layer_norm.default, (_meta(2, 7, 15), [16], None, None, 1e-5)),
    (aten.native_batch_norm.default, (_meta(2, 8, 5), _meta(7), _meta(7), _meta(7), _meta(7), False, 0.1, 1e-5)),
    (aten.add.Tensor, (_meta(4, 9), _meta(4, 8))),
]  # fmt: skip


@pytest.mark.parametrize("func,args", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_calls_fall_through_to_torch(func, args) -> None:
    assert meta_shortcut(func, args, {}) is None
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        func(*args)


def test_plain_but_unusual_calls_fall_through() -> None:
    broadcast = (_meta(4, 9), _meta(1, 9))
    assert meta_shortcut(aten.add.Tensor, broadcast, {}) is None  # torch's kernel broadcasts
    strided = _meta(9, 4).t()
    assert meta_shortcut(aten.gelu.default, (strided,), {}) is None
    ints = _meta(4, dtype=torch.int64)
    assert meta_shortcut(aten.rsqrt.default, (ints,), {}) is None  # int -> float promotion
    real = torch.zeros(4, 9)
    assert meta_shortcut(aten.gelu.default, (real,), {}) is None  # only meta tensors
    training = (_meta(2, 8, 5), _meta(8), _meta(8), _meta(8), _meta(8), True, 0.1, 1e-5)
    assert meta_shortcut(aten.native_batch_norm.default, training, {}) is None


def test_every_shortcut_is_a_real_overload() -> None:
    for func in SHORTCUTS:
        assert isinstance(func, torch._ops.OpOverload)
