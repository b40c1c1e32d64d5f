"""``Channels.ignore`` keeps a module's outputs and lets its inputs shrink with the layer
before (Torch-Pruning's ``ignored_layers``); ``Channels.freeze`` leaves a module whole."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from netslim.errors import ConfigError
from netslim.structural import Channels, prune
from netslim.structural.verify import prune_and_compare


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class ShuffleUnit(nn.Module):
    """A ShuffleNet-style unit: split the channels, transform one half, concatenate, shuffle."""

    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(
            nn.Conv2d(h, h, 1), nn.BatchNorm2d(h), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1, groups=h), nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1), nn.BatchNorm2d(h), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        y = torch.cat([a, self.branch(b)], 1)
        n, c, hh, ww = y.shape
        return y.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.unit = ShuffleUnit(32)
        self.last = nn.Sequential(nn.Conv2d(32, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.unit(self.stem(x))).mean((2, 3)))


X = (torch.randn(2, 3, 8, 8),)


def built() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def test_ignored_head_keeps_its_outputs_and_the_block_before_shrinks():
    base, ignored, frozen = built(), built(), built()
    prune(base, X, Channels(ratio=0.5))
    diff, _, _ = prune_and_compare(ignored, X, Channels(ratio=0.5, ignore=("head",)))
    assert diff < 1e-5
    assert ignored.head.out_features == 10 and ignored.head.in_features == 32
    assert ignored.last[0].out_channels == 32  # the block before the head is pruned
    assert params(ignored) == params(base)  # the head's outputs were never prunable anyway
    prune(frozen, X, Channels(ratio=0.5, freeze=("head",)))
    assert frozen.head.in_features == 64 and frozen.last[0].out_channels == 64
    assert params(frozen) > params(ignored)


def test_ignored_block_keeps_every_output_inside_it_but_its_input_shrinks():
    model = built()
    diff, _, _ = prune_and_compare(model, X, Channels(ratio=0.5, ignore=("last",)))
    assert diff < 1e-5
    assert model.last[0].out_channels == 64 and model.head.in_features == 64
    assert model.last[0].in_channels < 32  # the unit before it shrank
    frozen = built()
    prune(frozen, X, Channels(ratio=0.5, freeze=("last",)))
    assert frozen.last[0].in_channels == 32 and frozen.last[0].out_channels == 64


def test_ignore_a_unit_in_the_middle():
    model = built()
    before = copy.deepcopy(model)
    diff, _, _ = prune_and_compare(model, X, Channels(ratio=0.5, ignore=("unit.branch.5",)))
    assert diff < 1e-5
    assert model.unit.branch[5].out_channels == before.unit.branch[5].out_channels
    assert model.unit.branch[0].out_channels < before.unit.branch[0].out_channels


@pytest.mark.parametrize("field", ["ignore", "freeze"])
def test_bad_names(field):
    with pytest.raises(ConfigError, match="nope"):
        prune(built(), X, Channels(**{field: ("nope",)}))
    with pytest.raises(ConfigError, match=field):
        Channels(**{field: 3})
    assert getattr(Channels(**{field: "head"}), field) == ("head",)


def test_a_mistyped_name_gets_the_closest_real_ones():
    """One hint (``netslim.core.names.did_you_mean``) for every name a user types: module names
    and a config's settings, here; recipe fields and command-line flags in their own tests."""
    with pytest.raises(
        ConfigError, match=r"no module named 'unit.branc.5' .*did you mean 'unit.branch.5'"
    ):
        prune(built(), X, Channels(ignore=("unit.branc.5",)))
    with pytest.raises(ConfigError, match=r"no setting 'raito' \(did you mean 'ratio'\?\)"):
        Channels.from_dict({"raito": 0.5})
    with pytest.raises(ConfigError, match=r"no setting 'zzz'$"):  # nothing close: no hint
        Channels.from_dict({"zzz": 0.5})
