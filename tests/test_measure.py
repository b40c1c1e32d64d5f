"""netslim.measure: exact counts, MACs, latency, saved size and the measure() summary."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save
from torch import nn

from netslim.core.masks import attach_mask, make_permanent
from netslim.errors import ConfigError
from netslim.measure import (
    LatencyStats,
    count_macs,
    count_nonzero_params,
    count_params,
    effective_state_dict,
    latency_ms,
    measure,
    saved_size_bytes,
)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 2),
    )


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 4, bias=False)
        self.b = nn.Linear(3, 4, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


def test_counts_exact_and_masked_zeros_count_as_zero() -> None:
    model = mlp()
    assert count_params(model) == 10 * 20 + 20 + 20 * 5 + 5
    assert count_nonzero_params(model) == count_params(model)
    mask = torch.ones(20, 10, dtype=torch.bool)
    mask[:, :3] = False  # 60 entries masked
    attach_mask(model[0], "weight", mask)
    assert count_params(model) == 325  # masking keeps the shape
    assert count_nonzero_params(model) == 325 - 60
    assert "0.weight" in effective_state_dict(model)
    assert not any("parametrizations" in key for key in effective_state_dict(model))


def test_tied_parameters_count_once() -> None:
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    assert count_params(model) == 16
    assert saved_size_bytes(model) == len(save({"0.weight": model[0].weight.detach()}))


def test_macs_linear_conv_and_input_layouts() -> None:
    lin = nn.Linear(7, 3)
    assert count_macs(lin, torch.randn(1, 7)) == 7 * 3
    assert count_macs(lin, (torch.randn(4, 7),)) == 4 * 7 * 3
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.randn(1, 3, 10, 10)) == 8 * 10 * 10 * 3 * 3 * 3
    two = TwoInputs()
    expected = 6 * 4 + 3 * 4
    assert count_macs(two, (torch.randn(1, 6), torch.randn(1, 3))) == expected
    assert count_macs(two, {"x": torch.randn(1, 6), "y": torch.randn(1, 3)}) == expected


def test_macs_restores_training_mode_and_ignores_masks() -> None:
    model = cnn().train()
    model[1].eval()  # a mixed state must come back as it was
    dense = count_macs(model, torch.randn(1, 3, 4, 4))
    assert model.training and model[0].training and not model[1].training
    attach_mask(model[0], "weight", torch.zeros_like(model[0].weight, dtype=torch.bool))
    assert count_macs(model, torch.randn(1, 3, 4, 4)) == dense == 8 * 16 * 27 + 128 * 2


def test_latency_positive_and_threads_restored() -> None:
    before = torch.get_num_threads()
    stats = latency_ms(mlp(), torch.randn(1, 10), threads=2, warmup=1, repeats=5)
    assert isinstance(stats, LatencyStats)
    assert torch.get_num_threads() == before
    assert 0 < stats.min <= stats.q1 <= stats.median <= stats.q3
    assert stats.iqr == pytest.approx(stats.q3 - stats.q1)
    assert stats.threads == 2 and stats.repeats == 5
    assert latency_ms(mlp(), torch.randn(1, 10), warmup=0, repeats=1).iqr == 0


@pytest.mark.parametrize(
    "kwargs", [{"threads": 0}, {"repeats": 0}, {"warmup": -1}, {"threads": 1.5}]
)
def test_latency_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        latency_ms(mlp(), torch.randn(1, 10), **kwargs)


def test_saved_size_is_effective_weights_only() -> None:
    model = cnn()
    plain = len(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    assert saved_size_bytes(model) == plain
    attach_mask(model[0], "weight", torch.rand(model[0].weight.shape) > 0.5)
    assert saved_size_bytes(model) == plain  # masks are not stored, dense weights are
    make_permanent(model)
    assert saved_size_bytes(model) == plain


def test_measure_summary_with_accuracy() -> None:
    model = mlp()
    x = torch.randn(8, 10)
    labels = model(x).argmax(-1)
    loader = [(x[:4], labels[:4]), (x[4:], labels[4:])]
    result = measure(model, torch.randn(1, 10), loader=loader)
    assert result["accuracy"] == 1.0
    assert result["params"] == result["nonzero_params"] == 325
    assert result["macs"] == 10 * 20 + 20 * 5
    assert result["latency_ms"] > 0 and result["size_bytes"] > 0
    custom = measure(
        model, torch.randn(1, 10), loader=loader, evaluate=lambda m, dl: 0.25, latency=False
    )
    assert custom["accuracy"] == 0.25 and custom["latency_ms"] is None
    assert measure(model, torch.randn(1, 10), latency=False)["accuracy"] is None


def test_batch_timing_only_for_samples_up_to_an_imagenet_image() -> None:
    conv = nn.Conv2d(3, 2, 1)
    small = measure(conv, torch.randn(1, 3, 32, 32), latency_batch=4)
    assert small["latency_batch_ms"] is not None and small["latency_batch_ms"] > 0
    large = measure(conv, torch.randn(1, 3, 225, 225), latency_batch=4)  # over 3x224x224
    assert large["latency_ms"] > 0 and large["latency_batch_ms"] is None


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("fastpath", [True, False])
def test_macs_count_multihead_attention_in_eval(fastpath):
    """The fused inference path of nn.MultiheadAttention is counted like the regular one."""
    tokens, dim, heads = 10, 16, 4
    model = _SelfAttention(dim, heads).eval()
    expected = 4 * tokens * dim * dim + 2 * tokens * tokens * dim  # q, k, v, out; scores, mix
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        assert count_macs(model, torch.randn(1, tokens, dim)) == expected
        assert torch.backends.mha.get_fastpath_enabled() is fastpath  # the setting is restored
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


class _Matmul(torch.nn.Module):
    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x @ w


class _PassesAWeightView(torch.nn.Module):
    """Hands a view of its parameter to a submodule, as transformers' Mamba does with its conv
    weight: under no_grad the view requires grad but has no grad_fn."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 6))
        self.matmul = _Matmul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.w.view(4, 6))


def test_macs_count_a_module_fed_a_parameter_view() -> None:
    """The flop counter's module tracker refused such an input ("Expected gradient function to
    be set") and count_macs failed (the coverage bench's Mamba row had no MACs)."""
    model = _PassesAWeightView()
    assert count_macs(model, torch.randn(3, 4)) == 3 * 4 * 6
    assert model.w.grad is None


def test_macs_count_recurrent_layers() -> None:
    """On CPU nn.LSTM runs oneDNN's fused RNN layer, for which the flop counter has no formula
    (an LSTM counted 0 MACs): the count runs the gates' matmuls instead."""
    lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True, bidirectional=True).eval()
    steps = 5
    per_step = 4 * 12 * (8 + 12) + 4 * 12 * (2 * 12 + 12)  # layer 0, layer 1 (both directions in)
    assert count_macs(lstm, torch.randn(1, steps, 8)) == 2 * steps * per_step
    assert torch.backends.mkldnn.enabled  # restored
