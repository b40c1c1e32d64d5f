"""netslim.regularization: the L1 weight penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netslim.core.masks import attach_mask
from netslim.errors import ConfigError
from netslim.regularization import L1Penalty


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def test_value_is_lambda_times_abs_sum() -> None:
    model = cnn()
    expected = 0.01 * (model[0].weight.abs().sum() + model[4].weight.abs().sum())
    assert torch.allclose(L1Penalty(0.01)(model), expected)
    assert torch.allclose(L1Penalty(0.5, modules=["4"])(model), 0.5 * model[4].weight.abs().sum())
    assert torch.allclose(
        L1Penalty(0.5, modules=[model[0]])(model), 0.5 * model[0].weight.abs().sum()
    )
    assert L1Penalty(0.0)(model).item() == 0.0


def test_respects_masks_and_gradient() -> None:
    model = cnn()
    mask = torch.rand(model[4].weight.shape) > 0.5
    attach_mask(model[4], "weight", mask)
    penalty = L1Penalty(0.1, modules=["4"])
    value = penalty(model)
    assert torch.allclose(value, 0.1 * model[4].weight.abs().sum())
    value.backward()
    original = model[4].parametrizations.weight.original
    assert torch.equal(original.grad[~mask], torch.zeros(int((~mask).sum())))
    assert torch.allclose(original.grad[mask], 0.1 * original[mask].sign())


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_rejects_bad_lambda(lam) -> None:
    with pytest.raises(ConfigError):
        L1Penalty(lam)


def test_unknown_module_name() -> None:
    with pytest.raises(ConfigError, match="'fc'"):
        L1Penalty(0.1, modules=["fc"])(cnn())
