"""The meta-tensor trace: same algebra as the real trace, real fallback, nothing left behind."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from netslim.structural import Channels, prune_and_compare
from netslim.structural.groups import analyze


def _signature(model: nn.Module, inputs) -> list[tuple[str, int, int]]:
    analysis = analyze(model, inputs)
    real = analyze(model, inputs, meta=False)
    assert analysis.graph.on_meta and not real.graph.on_meta
    meta_groups = sorted((g.id, g.size, len(g.members)) for g in analysis.groups)
    real_groups = sorted((g.id, g.size, len(g.members)) for g in real.groups)
    assert meta_groups == real_groups
    return meta_groups


def _tiny_hf(kind: str) -> tuple[nn.Module, dict]:
    import tiny_hf

    factory = tiny_hf.tiny_bert if kind == "bert" else tiny_hf.tiny_llama
    return factory(vocab_size=50), {"input_ids": torch.randint(0, 50, (2, 6))}


@pytest.mark.parametrize("kind", ["resnet18", "mobilenet_v2", "bert", "llama"])
def test_meta_trace_finds_the_groups_the_real_trace_finds(kind: str) -> None:
    """Including fused CPU attention (BERT) and grouped-query attention (LLaMA): the meta
    trace takes the same kernels, so validation needs no real re-trace."""
    if kind in ("bert", "llama"):
        model, inputs = _tiny_hf(kind)
    else:
        torchvision = pytest.importorskip("torchvision")
        model, inputs = getattr(torchvision.models, kind)().eval(), (torch.randn(1, 3, 64, 64),)
    assert _signature(model, inputs)
    diff, _, report = prune_and_compare(model, inputs, Channels(ratio=0.5))
    assert diff < 1e-5
    assert report["params"]["after"] < report["params"]["before"]


class _NeedsValues(nn.Module):
    """Code that reads a value (``.item()``) cannot run on meta tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x).relu()
        if h.sum().item() > -1.0:
            h = h * 2
        return self.b(h)


def test_value_dependent_code_falls_back_to_the_real_trace() -> None:
    model = _NeedsValues().eval()
    x = (torch.randn(3, 4),)
    analysis = analyze(model, x)
    assert not analysis.graph.on_meta
    assert [g.id for g in analysis.groups] == [g.id for g in analyze(model, x, meta=False).groups]
    assert len(analysis.graph.eval_records) == len(analyze(model, x, meta=False).graph.records)


class _Caching(nn.Module):
    """Caches a derived tensor on first use, as rotary tables and attention-bias caches do."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "w2" not in self.cache:
            self.cache["w2"] = self.lin.weight * 2
        self.last = x
        return self.lin(x) + x @ self.cache["w2"].T


def test_meta_trace_leaves_no_meta_tensor_on_the_model() -> None:
    model = _Caching().eval()
    x = torch.randn(2, 4)
    before = copy.deepcopy(model.state_dict())
    analyze(model, (x,))
    assert "w2" not in model.cache and not hasattr(model, "last")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model(x)  # the real forward still works and fills the cache with a real tensor
    assert not model.cache["w2"].is_meta
