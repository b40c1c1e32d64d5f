"""Tracing never changes a module: caches a forward writes on modules (lazily built tables,
cached shapes, dicts and lists of tensors, tensors updated in place) are put back after every
trace and check forward, so a failed prune leaves the model bit-identical, attributes included,
and a shape-only trace leaves no meta tensor behind. Every model here is built cold (no forward
has run before the engine sees it)."""

from __future__ import annotations

import copy

import pytest
import torch
from module_snapshot import differences, has_meta, snapshot
from torch import nn

import netslim.structural.apply as apply_mod
from netslim.errors import PruningError
from netslim.structural import Channels, PruningPlan, apply_plan, groups, prune
from netslim.structural.groups import analyze
from netslim.structural.reference import masked_reference


class AnchorHead(nn.Module):
    """Like a detection head: a table built on the first forward and cached with the input
    shape it was built for (class-level defaults, instance attributes once built)."""

    anchors = torch.empty(0)
    shape = None

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape != x.shape:
            h, w = x.shape[-2:]
            self.anchors = torch.arange(h * w, dtype=x.dtype, device=x.device).view(1, 1, h, w)
            self.shape = x.shape
        return self.conv(x) + self.anchors


class Caching(nn.Module):
    """Every kind of state a forward might write."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = AnchorHead()
        self.cache: dict = {}
        self.seen: list = []
        self.calls = 0
        self.total = torch.zeros(1)  # a plain tensor attribute, updated in place
        self.register_buffer("count", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        self.cache[tuple(x.shape)] = y.mean(dim=(0, 2, 3))
        self.seen.append(y.shape)
        self.calls += 1
        if not y.is_meta:
            self.total.add_(1)
            self.count.add_(1)
        self.last = (y[:1, :, 0, 0], [y.shape])
        return self.head(torch.relu(self.b(y)))


X = (torch.randn(2, 3, 8, 8),)


def test_trace_puts_every_attribute_back():
    model = Caching().eval()
    before = snapshot(model)
    for meta in (True, False):
        analyze(model, X, meta=meta)
        assert differences(model, before) == [], meta
        assert not has_meta(model)
    groups(model, X)
    assert differences(model, before) == []


def test_cold_cached_model_prunes_exactly():
    torch.manual_seed(0)
    model = Caching().eval()
    original = copy.deepcopy(model)
    plan, _ = prune(model, X, Channels(ratio=0.5))
    assert model.a.out_channels == 8 and not has_meta(model)
    assert "anchors" not in vars(model.head) and model.cache == {} and model.calls == 0
    with torch.no_grad():
        got = model(*X)  # still runs, and now builds its table for real
        want = masked_reference(original, plan, X)(*X)
    assert vars(model.head)["anchors"].shape == (1, 1, 8, 8)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_failed_apply_leaves_cached_state_bit_identical():
    class HardCoded(Caching):
        def forward(self, x):
            y = torch.relu(self.a(x))
            self.cache["y"] = y
            self.total.add_(1)
            left, right = torch.split(y, 8, dim=1)  # a size fixed in code
            return self.head(self.b(torch.cat([right, left], 1)))

    model = HardCoded().eval()
    before = snapshot(model)
    plan = PruningPlan({"a.weight:0": [0, 2, 4, 6]}, {"a.weight:0": 8})
    with pytest.raises(PruningError):
        apply_plan(model, plan, X)
    assert differences(model, before) == []


def test_failed_check_forward_leaves_warm_state_bit_identical(monkeypatch):
    """A model that already ran (its caches hold real tables) fails in the check forward after
    pruning: every cache is as it was, not rebuilt for the pruned (or meta) run."""
    model = Caching().eval()
    with torch.no_grad():
        model(*X)
    before = snapshot(model)

    def failing(analysis, kept, rec, failure):
        raise apply_mod._Invalid("injected after the check forward ran", "head")

    monkeypatch.setattr(apply_mod, "_check_shapes", failing)
    with pytest.raises(PruningError, match="injected"):
        prune(model, X, Channels(ratio=0.5))
    assert differences(model, before) == []


def test_forward_writing_a_parameter_in_place_is_refused():
    class SelfEditing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            with torch.no_grad():
                self.conv.weight.mul_(1.0)
            return self.conv(x)

    model = SelfEditing().eval()
    groups(model, X)  # the shape-only trace runs on meta twins: the weight is not touched
    with pytest.raises(PruningError, match="in place"):
        analyze(model, X, meta=False)
