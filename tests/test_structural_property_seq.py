"""Property: random token models (linear, MLP, SDPA attention, nn.MultiheadAttention, transposed
conv, LayerNorm blocks) prune to an exact equivalent of their masked original under random
round_to / ratio / parameter or MAC targets / within_heads, and always lose something (each net
ends in an MLP any target can take from). An attention whose head count equals its head size
(4 and 4) is left whole by the engine, reported as a boundary: its int attributes cannot be
told apart by value; the property still holds there."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from netslim.structural import Channels, prune_and_compare

BLOCKS = ("linear", "mlp", "sdpa", "mha", "tconv", "norm")
HEAD_DIM = 4


class SelfAttention(nn.Module):
    """HF-style: one qkv projection, heads by attribute, SDPA, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, HEAD_DIM
        self.qkv = nn.Linear(dim, 3 * heads * HEAD_DIM)
        self.proj = nn.Linear(heads * HEAD_DIM, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, kind: str, dim: int, width: int, heads: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":  # changes the model width
            self.a = nn.Linear(dim, width)
        elif kind == "mlp":
            self.a, self.b = nn.Linear(dim, width), nn.Linear(width, dim)
        elif kind == "sdpa":
            self.a = SelfAttention(dim, heads)
        elif kind == "mha":  # its embed_dim is the model width: heads go with channels
            self.a = nn.MultiheadAttention(dim, dim // HEAD_DIM, batch_first=True)
        elif kind == "tconv":  # changes the model width, over the token axis
            self.a = nn.ConvTranspose1d(dim, width, 3, padding=1)
        else:
            self.a = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == "linear":
            return F.gelu(self.a(x))
        if k == "mlp":
            return x + self.b(F.relu(self.a(x)))
        if k == "sdpa":
            return x + self.a(x)
        if k == "mha":
            return x + self.a(x, x, x, need_weights=False)[0]
        if k == "tconv":
            return F.silu(self.a(x.transpose(1, 2)).transpose(1, 2))
        return self.a(x)


class TokenNet(nn.Module):
    def __init__(self, spec: list[tuple[str, int, int]]) -> None:
        super().__init__()
        dim = 8
        self.embed = nn.Linear(6, dim)
        blocks = []
        for kind, width, heads in spec:
            blocks.append(Block(kind, dim, width, heads))
            dim = width if kind in ("linear", "tconv") else dim
        blocks.append(Block("mlp", dim, 16, 1))  # one unit any target can take from
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)).mean(1))


def _randomized(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


spec = st.lists(
    st.tuples(st.sampled_from(BLOCKS), st.sampled_from([8, 12, 16]), st.sampled_from([2, 3, 4])),
    min_size=0,
    max_size=3,
)
target = st.one_of(
    st.sampled_from([0.25, 0.5]).map(lambda r: {"ratio": r}),
    st.sampled_from([0.5, 0.7]).map(lambda f: {"target_params": f}),
    st.sampled_from([0.5, 0.7]).map(lambda f: {"target_macs": f}),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=spec,
    target=target,
    round_to=st.sampled_from([1, 2, 4]),
    within_heads=st.booleans(),
    criterion=st.sampled_from(["l2", "random"]),
    seed=st.integers(0, 3),
)
def test_random_token_models_prune_exactly(spec, target, round_to, within_heads, criterion, seed):
    torch.manual_seed(seed)
    model = _randomized(TokenNet(spec))
    before = {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    x = torch.randn(2, 5, 6)
    config = Channels(
        **target, round_to=round_to, within_heads=within_heads, criterion=criterion, seed=seed
    )
    diff, plan, report = prune_and_compare(model, (x,), config)
    assert diff <= 1e-5, (spec, report.get("boundaries"))
    params = sum(p.numel() for p in model.parameters())
    assert params == report["params"]["after"] < report["params"]["before"], spec
    model(torch.randn(3, 7, 6))  # other batch and length
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):  # each kept width: rounded, or the whole width
            out = m.weight.shape[0]
            assert out % round_to == 0 or out == before[name][0], (name, out, round_to)
        if isinstance(m, SelfAttention):
            assert m.qkv.out_features == 3 * m.num_heads * m.head_dim
            assert m.proj.in_features == m.num_heads * m.head_dim
        if isinstance(m, nn.MultiheadAttention):
            assert m.num_heads * m.head_dim == m.embed_dim == m.out_proj.in_features
