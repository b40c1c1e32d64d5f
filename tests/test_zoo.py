"""netslim.models.zoo: shapes, parameter counts, traceability and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from netslim.errors import ConfigError
from netslim.models import ZOO, get_zoo_model

PARAMS = {
    "lenet300": 266_610,
    "lenet5": 61_706,
    "vgg_small": 77_786,
    "resnet20": 272_186,
    "resnet56": 855_482,
}


def test_registry_lists_every_model() -> None:
    assert set(ZOO) == set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_forward_shape_params_and_determinism(name: str) -> None:
    torch.manual_seed(0)
    model = get_zoo_model(name).eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (3, 10)
        assert torch.equal(model(x), y), "eval-mode forward must be deterministic"


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_fx_traceable(name: str) -> None:
    model = get_zoo_model(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_num_classes_and_in_channels(name: str) -> None:
    model = get_zoo_model(name, num_classes=7, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_initialisation(name: str) -> None:
    model = get_zoo_model(name)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    expected = (2.0 / first.in_features) ** 0.5  # Kaiming fan-in for linear layers
    assert abs(float(first.weight.detach().std()) / expected - 1) < 0.2


def test_resnet_uses_projection_shortcuts_only_when_downsampling() -> None:
    model = get_zoo_model("resnet20")
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 3
    assert len(get_zoo_model("resnet56").layer3) == 9
    assert isinstance(model.layer1[0].shortcut, nn.Identity)
    for stage in (model.layer2, model.layer3):
        conv = stage[0].shortcut[0]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(stage[1].shortcut, nn.Identity)


def test_vgg_small_custom_cfg() -> None:
    model = get_zoo_model("vgg_small", cfg=(8, "M", 16, "M"))
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    with pytest.raises(ConfigError):
        get_zoo_model("vgg_small", cfg=(8, "M", "M", "M", "M", "M"))
    with pytest.raises(ConfigError):
        get_zoo_model("vgg_small", cfg=(8, "X"))


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_zoo_model("alexnet")
    for name in ZOO:
        assert name in str(info.value)


def test_unknown_keyword_is_config_error() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        get_zoo_model("lenet300", width=3)
