"""Structural pruning on small hand-built nets: every supported layer and op, checked for exact
equivalence with the masked original (max abs diff <= 1e-5, eval mode, random BN stats)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netslim.core.copying import copy_model
from netslim.structural import Channels, groups, prune_and_compare

TOL = 1e-5


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial norm statistics and affine params, so BN etc. are not identities."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if isinstance(
                    m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
                ) and isinstance(p, nn.Parameter):
                    p.uniform_(0.5, 1.5) if name == "weight" else p.uniform_(-0.5, 0.5)
    return model.eval()


def check(model: nn.Module, *inputs: torch.Tensor, config: Channels | None = None):
    model = randomize(model)
    diff, plan, report = prune_and_compare(model, inputs, config or Channels(ratio=0.5))
    assert diff <= TOL, (diff, report["boundaries"])
    assert plan.keep, "nothing was pruned"
    return model, plan, report


class ResidualSE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.c1 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.se1 = nn.Linear(16, 4)
        self.se2 = nn.Linear(4, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = self.bn2(self.c2(F.relu(self.bn1(self.c1(x)))))
        s = torch.sigmoid(self.se2(F.relu(self.se1(y.mean((2, 3))))))
        y = y * s[:, :, None, None]
        x = F.relu(x + y)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_residual_add_and_squeeze_excitation():
    model, plan, _ = check(ResidualSE(), torch.randn(2, 3, 8, 8))
    assert model.c1.out_channels == 16 and model.bn1.num_features == 16
    assert model.stem.out_channels == 8 == model.c2.out_channels == model.se1.in_features
    assert model.head.out_features == 5


class CatSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 12, 3, padding=1)
        self.mix = nn.Conv2d(20, 16, 1)
        self.l = nn.Conv2d(8, 8, 1)
        self.r = nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.mix(torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1))
        left, right = y.chunk(2, dim=1)
        u, v = torch.split(y, 8, dim=1)
        z = torch.cat([self.l(left) + u, self.r(right) * v], 1)
        return self.out(z)


def test_cat_split_chunk():
    model, _, _ = check(CatSplit(), torch.randn(1, 3, 6, 6))
    assert model.mix.in_channels == 10


class Shuffle(nn.Module):
    def __init__(self, builtin: bool) -> None:
        super().__init__()
        self.builtin = builtin
        self.c1 = nn.Conv2d(3, 16, 1)
        self.b1 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.b2 = nn.Conv2d(8, 8, 1)
        self.c2 = nn.Conv2d(16, 16, 1, groups=2)
        self.c3 = nn.Conv2d(16, 6, 1)
        self.shuffle = nn.ChannelShuffle(2)

    def forward(self, x):
        x = self.c1(x)
        a, b = x.chunk(2, 1)
        x = torch.cat([self.b1(a), self.b2(b)], 1)
        if self.builtin:
            x = self.shuffle(x)
        else:
            n, c, h, w = x.shape
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.c3(F.relu(self.c2(x)))


@pytest.mark.parametrize("builtin", [False, True])
def test_channel_shuffle_depthwise_grouped(builtin):
    check(Shuffle(builtin), torch.randn(1, 3, 5, 5))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.g = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.gn = nn.GroupNorm(4, 32)
        self.dw = nn.Conv2d(32, 64, 3, padding=1, groups=32)  # depth multiplier 2
        self.pr = nn.PReLU(64)
        self.c2 = nn.Conv2d(64, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.pr(self.dw(self.gn(self.g(self.c1(x)))))
        return self.fc(torch.flatten(self.c2(x), 1))


@pytest.mark.parametrize("whole_groups", [False, True])
def test_grouped_depthwise_groupnorm_prelu_flatten(whole_groups):
    cfg = Channels(conv_groups=whole_groups)
    model, _, _ = check(Grouped(), torch.randn(2, 3, 4, 4), config=cfg)
    assert model.g.groups == model.gn.num_groups == (2 if whole_groups else 4)
    assert model.fc.in_features == model.c2.out_channels * 16


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.up = nn.ConvTranspose2d(16, 12, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(12, 8, 3, padding=1, groups=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.out(F.relu(self.up2(F.relu(self.up(self.inorm(self.c(x)))))))


def test_conv_transpose_instance_norm():
    model, _, _ = check(Transposed(), torch.randn(1, 3, 8, 8))
    assert model.up.in_channels == model.c.out_channels


class OneAndThreeD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(12)
        self.c2 = nn.Conv1d(12, 4, 1)
        self.c3 = nn.Conv3d(4, 10, 3, padding=1)
        self.bn3 = nn.BatchNorm3d(10)
        self.c4 = nn.Conv3d(10, 2, 1)

    def forward(self, x, v):
        return self.c2(F.relu(self.bn1(self.c1(x)))), self.c4(self.bn3(self.c3(v)).relu())


def test_conv1d_conv3d_two_inputs_two_outputs():
    check(OneAndThreeD(), torch.randn(2, 4, 7), torch.randn(1, 4, 3, 3, 3))


class TinyLM(nn.Module):
    """Embedding, LayerNorm, RMSNorm, MLP, nn.MultiheadAttention, tied output head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.ln = nn.LayerNorm(32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.rms = nn.RMSNorm(32)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.head = nn.Linear(32, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        x = self.emb(ids)
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(self.rms(x))))
        return self.head(x)


def test_embedding_norms_mha_tied_weights():
    model, _, report = check(TinyLM(), torch.randint(0, 50, (2, 7)))
    assert model.head.weight is model.emb.weight
    assert model.emb.embedding_dim == model.attn.embed_dim == model.ln.normalized_shape[0]
    assert model.attn.num_heads * model.attn.head_dim == model.attn.embed_dim
    # the attention itself was pruned (whole heads, head_dim kept), not only the MLP
    assert (model.attn.num_heads, model.attn.head_dim, model.attn.embed_dim) == (2, 8, 16)
    model.train()(torch.randint(0, 50, (3, 5)))  # still runs, other shapes, train mode


class TinyViT(nn.Module):
    """cls token, pos embed, layer scale, qkv reshaped into heads, manual attention."""

    def __init__(self, dim: int = 24, heads: int = 3) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 5, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 4)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        b, n, c = x.shape
        qkv = (
            self.qkv(self.norm1(x))
            .reshape(b, n, 3, self.heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)
        a = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        y = (a @ v).transpose(1, 2).reshape(b, n, -1)
        x = x + self.gamma * self.proj(y)
        x = x + self.mlp(self.norm2(x))
        return self.head(x[:, 0])


def test_vit_style_attention_heads():
    model, _, report = check(TinyViT(), torch.randn(2, 3, 8, 8))
    assert model.heads == 2  # one of three heads removed, attribute followed
    assert model.qkv.out_features == 3 * model.heads * model.head_dim


def test_sdpa_attention_head_facts_follow_in_hf_bert_and_llama():
    """HF attention calls SDPA and reshapes with -1 (``view(*shape, -1, head_size)``,
    ``reshape(*shape, -1)``): its forward never reads ``all_head_size`` or the config's head
    counts, so outputs stay equal even when those facts go stale. Check them directly: whole
    heads went, and every head fact on the module and the config describes the new weights
    (code that re-slices or rebuilds a layer from them must see the pruned shapes)."""
    import tiny_hf  # skips this test without transformers

    ids = torch.randint(0, 50, (2, 6))
    bert = tiny_hf.tiny_bert(vocab_size=50)
    bert, _, _ = check(bert, ids)
    for layer in bert.encoder.layer:
        att = layer.attention.self
        assert att.num_attention_heads == 2  # 2 of 4 heads removed, head size kept
        assert att.attention_head_size == 8
        inner = att.num_attention_heads * att.attention_head_size
        assert att.all_head_size == inner == att.query.out_features == att.value.out_features
        assert layer.attention.output.dense.in_features == inner
    assert bert.config.num_attention_heads == 2

    llama = tiny_hf.tiny_llama(vocab_size=50)
    llama, _, _ = check(llama, ids)
    cfg = llama.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 1)  # of 4 and 2
    for layer in llama.model.layers:
        att = layer.self_attn
        assert att.head_dim == cfg.head_dim == 8
        assert att.q_proj.out_features == cfg.num_attention_heads * att.head_dim
        assert att.k_proj.out_features == att.v_proj.out_features == cfg.num_key_value_heads * 8
        assert att.num_key_value_groups == cfg.num_attention_heads // cfg.num_key_value_heads
        assert att.o_proj.in_features == att.q_proj.out_features


class SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.c0(x)
        return self.out(self.shared(F.relu(self.shared(x))))


def test_module_applied_twice():
    check(SharedConv(), torch.randn(1, 3, 5, 5))


class Boundary(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        s = torch.sort(self.a(x), dim=1).values  # channel order matters: must stay whole
        return self.d(self.c(s + self.b(x)).relu())


def test_unknown_structure_is_a_reported_boundary():
    model, _, report = check(Boundary(), torch.randn(1, 3, 4, 4))
    assert model.a.out_channels == 8 == model.b.out_channels
    assert model.c.out_channels == 4
    assert any(b["op"] == "sort" for b in report["boundaries"])


def test_groups_are_inspectable():
    gs = groups(ResidualSE().eval(), (torch.randn(1, 3, 8, 8),))
    ids = {g.id for g in gs}
    assert "c1.weight:0" in ids and "stem.weight:0" in ids
    g = next(g for g in gs if g.id == "stem.weight:0")
    members = {f"{m.name}:{m.dim}" for m in g.members}
    assert {"bn0.weight:0", "c1.weight:1", "c2.weight:0", "se2.bias:0", "head.weight:1"} <= members
    assert g.to_dict()["size"] == 16


class NormAndRestride(nn.Module):
    """Cross-covariance style normalisation over the token dim (``F.normalize`` → aten
    ``linalg_vector_norm(x, 2, dim)``) and a channels-last restride of a pooled map."""

    def __init__(self, restride_ok: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 4)
        self.restride_ok = restride_ok

    def forward(self, x):
        h = self.a(x)
        n = F.normalize(h.flatten(2), dim=-1).view_as(h)  # over positions, not channels
        p = self.b(n * h).mean((2, 3), keepdim=True)
        if self.restride_ok:  # (1, C, 1, 1): the same elements whatever the strides
            p = p.as_strided(p.shape, (p.shape[1], 1, p.shape[1], p.shape[1]))
        else:  # a (1, C/2, 2, 1) view of (1, C, 1, 1): reinterprets memory
            p = p.as_strided((1, p.shape[1] // 2, 2, 1), (p.shape[1], 2, 1, 1)).reshape(p.shape)
        return self.head(p.flatten(1))


def test_norm_over_positions_and_plain_restride_keep_channels_prunable():
    model, plan, report = check(NormAndRestride(True), torch.randn(1, 3, 6, 6))
    assert model.a.out_channels == 4 and model.b.out_channels == 4
    assert not any(b["op"] in ("linalg_vector_norm", "as_strided") for b in report["boundaries"])


class KeyBiasDropped(nn.Module):
    """Swin V2's attention: the packed q/k/v bias with its key third zeroed,
    ``bias[n : 2 * n]`` where ``n = numel // 3`` is recomputed at run time."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        bias = self.qkv.bias.clone()
        n = bias.numel() // 3
        bias[n : 2 * n].zero_()
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, t, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        return self.proj(y)


def test_one_of_equal_parts_sliced_at_run_time_keeps_heads_prunable():
    model, _, _ = check(KeyBiasDropped(), torch.randn(2, 5, 16))
    assert model.heads == 2 and model.qkv.out_features == 24


def test_empty_slice_traces():
    """Mamba's cache code slices zero elements (``x[..., n:n]``)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 6))
    model.register_forward_hook(lambda m, i, out: torch.cat([out, out[:, 3:3]], 1))
    check(model, torch.randn(2, 4))


class BiasTable(nn.Module):
    """Reached through a method, never through ``forward`` (timm's ``RelPosMlp.get_bias``):
    its ops run as its parent's, with its own ``num_heads`` and shape tuple."""

    def __init__(self, heads: int, n: int) -> None:
        super().__init__()
        self.num_heads, self.bias_shape = heads, (n, n, heads)
        self.mlp = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, heads))
        self.register_buffer("coords", torch.randn(n * n, 2))

    def get_bias(self):
        bias = self.mlp(self.coords).reshape(-1, self.num_heads)
        return bias.view(self.bias_shape).permute(2, 0, 1)


class HelperAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4, n: int = 5) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv, self.proj, self.rel = (
            nn.Linear(dim, 3 * dim),
            nn.Linear(dim, dim),
            BiasTable(heads, n),
        )

    def forward(self, x):
        b, t, _ = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = (q @ k.transpose(-2, -1) * 0.5 + self.rel.get_bias()).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, -1))


class SharedBiasNet(nn.Module):
    """timm's ``vit_srelpos``: one bias table shared by every block, its method called from
    the model's own forward (no module around the op)."""

    def __init__(self) -> None:
        super().__init__()
        self.rel = BiasTable(4, 5)
        self.blocks = nn.ModuleList(SharedBiasAttention() for _ in range(2))

    def forward(self, x):
        bias = self.rel.get_bias()
        for block in self.blocks:
            x = x + block(x, bias)
        return x


class SharedBiasAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x, bias):
        b, t, _ = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = (q @ k.transpose(-2, -1) * 0.5 + bias).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, -1))


def test_sizes_of_a_submodule_reached_through_a_method_follow():
    model, _, report = check(HelperAttention(), torch.randn(2, 5, 16))
    assert model.num_heads == model.rel.num_heads == 2 and model.rel.bias_shape == (5, 5, 2)
    assert not report["boundaries"]
    model, _, report = check(SharedBiasNet(), torch.randn(2, 5, 16))
    assert model.rel.num_heads == 2 and model.rel.bias_shape == (5, 5, 2)
    assert all(block.num_heads == 2 for block in model.blocks)


class ConflictingSplits(nn.Module):
    """One spatial dim split as 2 x 3 by a reshape, then split as 3 x 2 (Swin's window
    partition and patch merging), cropped to 4 (Swin's unpadding) or added to a copy split
    as 3 x 2 (MaxViT's block and grid partitions): the channels beside it are untouched."""

    def __init__(self, then: str) -> None:
        super().__init__()
        self.then = then
        self.c1, self.c2 = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.c1(x)
        b = y.shape[0]
        y = y.reshape(b, -1, 2, 3, 6).flip(2).reshape(b, -1, 6, 6)
        if self.then == "crop":
            return self.c2(y[:, :, :4])
        z = self.c1(x) if self.then == "add" else y
        z = z.reshape(b, -1, 3, 2, 6).flip(2).reshape(b, -1, 6, 6)
        return self.c2(y + z if self.then == "add" else z)


@pytest.mark.parametrize("then", ["reshape", "crop", "add"])
def test_conflicting_split_keeps_only_its_own_dim(then):
    model, _, _ = check(ConflictingSplits(then), torch.randn(2, 3, 6, 6))
    assert model.c1.out_channels == 8


def test_memory_reinterpreting_restride_is_a_boundary():
    model, _, report = check(NormAndRestride(False), torch.randn(1, 3, 6, 6))
    assert model.b.out_channels == 8
    assert any(b["op"] == "as_strided" for b in report["boundaries"])


class BiasedAttention(nn.Module):
    """One attention head with a learned float bias as ``attn_mask`` (relative position bias,
    as in MaxViT) and the default scale, then an MLP: on CPU the attention runs SDPA's math
    path, where 1/sqrt(head_dim) is a constant the op-level trace cannot see."""

    def __init__(self, dim: int = 32, tokens: int = 6) -> None:
        super().__init__()
        self.num_heads, self.head_dim = 1, dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(1, tokens, tokens))
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        return x + self.mlp(x)


def test_default_sdpa_scale_keeps_head_dim_on_the_math_path():
    model = BiasedAttention()
    with torch.no_grad():
        model.qkv.weight.mul_(4)  # large logits: a wrong scale would show clearly
    model, _, report = check(model, torch.randn(2, 6, 32))
    assert model.head_dim == 32 and model.mlp[0].out_features == 32
    assert any("1/sqrt(head_dim)" in b["reason"] for b in report["boundaries"])


def test_padding_mask_leaves_sdpa_heads_prunable():
    """A padded batch gives HF's SDPA path a (batch, 1, q, k) mask whose head dim broadcasts:
    heads are still removed, and the result equals the masked model on the same padded batch.
    Before, the broadcast head dim was tied to the heads and locked them, so only the FFN of
    a BERT fine-tuned on padded batches was pruned."""
    import tiny_hf  # skips this test without transformers

    bert = randomize(tiny_hf.tiny_bert(vocab_size=50))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    inputs = {"input_ids": torch.randint(1, 50, (2, 6)), "attention_mask": mask}
    diff, plan, _ = prune_and_compare(bert, inputs, Channels(ratio=0.5))
    assert diff <= TOL and plan.keep
    assert all(layer.attention.self.num_attention_heads == 2 for layer in bert.encoder.layer)


class HeadBiasAttention(nn.Module):
    """SDPA with a learned bias per head (as relative-position biases are): the bias's head
    dim is the heads' and must be sliced with them."""

    def __init__(self, dim: int = 16, heads: int = 4, tokens: int = 5) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bias = nn.Parameter(torch.randn(1, heads, tokens, tokens))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias, scale=0.5)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def test_per_head_sdpa_bias_is_pruned_with_its_heads():
    model, _, _ = check(HeadBiasAttention(), torch.randn(2, 5, 16))
    assert model.bias.shape[1] == model.qkv.out_features // 3 // 4 < 4  # heads went, bias too


class BaddbmmAttention(nn.Module):
    """Scores by ``baddbmm`` over (batch x heads) with one positional bias shared by all heads,
    shape (1, q, k): its first dim broadcasts over batch and heads."""

    def __init__(self, dim: int = 16, heads: int = 4, tokens: int = 5) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bias = nn.Parameter(torch.randn(1, tokens, tokens))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = (t.reshape(b * self.heads, n, -1) for t in (q, k, v))
        scores = torch.baddbmm(self.bias, q, k.transpose(1, 2)).softmax(-1)
        out = torch.bmm(scores, v).reshape(b, self.heads, n, -1).transpose(1, 2)
        return self.proj(out.reshape(b, n, -1))


def test_baddbmm_bias_broadcast_over_heads_leaves_them_prunable():
    """A bias whose dim of size 1 broadcasts over (batch x heads) constrains nothing there:
    whole heads (and the width of each, no scale here) can go. Before, the broadcast dim was
    tied to the heads and locked them."""
    model, _, report = check(BaddbmmAttention(), torch.randn(2, 5, 16))
    assert model.qkv.out_features < 48, report["boundaries"]
    # nn.MultiheadAttention's default call (need_weights=True) with a causal mask takes the
    # same path: baddbmm with the (1, q, k) mask
    model, _, report = check(MaskedMHA(), torch.randn(2, 6, 8))
    assert model.mha.num_heads < 4, report["boundaries"]


class MaskedMHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        causal = torch.triu(torch.full((h.shape[1], h.shape[1]), float("-inf")), 1)
        attended, _ = self.mha(h, h, h, attn_mask=causal)
        return self.out(h + attended).mean(1)


class Recurrent(nn.Module):
    def __init__(self, cell: type) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.rnn = cell(32, 24, batch_first=True)
        self.out = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.inp(x))[0]).mean(1)


def test_gru_with_batch_first_prunes_what_feeds_it():
    """``nn.GRU(batch_first=True)`` traces into elementwise gates, ``unsafe_split`` and a final
    in-place ``transpose_``: the Linear feeding it loses channels (the GRU's input features
    with them) and the result equals the masked model. Before, ``transpose_`` kept its input's
    layout, the check forward saw (2, 6, 24) where it expected (6, 2, 24) and pruning failed."""
    model, _, report = check(Recurrent(nn.GRU), torch.randn(2, 6, 8))
    assert model.inp.out_features == model.rnn.input_size < 32
    assert model.rnn.weight_ih_l0.shape[1] == model.rnn.input_size
    assert not report["boundaries"], report["boundaries"]  # unsafe_split has its rule


class RecurrentStack(nn.Module):
    """A recurrent layer built from keyword arguments, with or without a literal initial state."""

    def __init__(self, cell: type, literal_h0: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.rnn = cell(32, 24, batch_first=True, **kwargs)
        width = kwargs.get("proj_size") or 24
        self.out = nn.Linear(width * (2 if kwargs.get("bidirectional") else 1), 3)
        self.literal_h0 = literal_h0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = (torch.zeros(1, x.shape[0], 24),) if self.literal_h0 else ()
        return self.out(self.rnn(self.inp(x), *h0)[0]).mean(1)


@pytest.mark.parametrize(
    "cell, kwargs",
    [
        (nn.LSTM, {}),
        (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
        (nn.LSTM, {"proj_size": 10}),
        (nn.GRU, {}),
        (nn.RNN, {}),
    ],
)
def test_recurrent_hidden_size_is_pruned(cell: type, kwargs: dict) -> None:
    """The hidden size of nn.RNN/GRU/LSTM is a prunable width: the zero initial state the
    module makes (``torch.zeros(..., hidden_size)``) is one value everywhere, so its dims are
    free, and ``hidden_size`` follows the weights. Before, the factory's literal size locked it.
    The comparison with the masked model runs the real CPU kernel, oneDNN's fused RNN layer,
    which the trace now sees decomposed (it failed: "plan group ... does not exist")."""
    model, _, report = check(RecurrentStack(cell, **kwargs), torch.randn(2, 6, 8))
    rnn = model.rnn
    assert rnn.hidden_size < 24
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    assert rnn.weight_ih_l0.shape[0] == gates * rnn.hidden_size
    assert rnn.weight_hh_l0.shape[1] == (rnn.proj_size or rnn.hidden_size)
    assert rnn.input_size == model.inp.out_features
    assert not report["boundaries"], report["boundaries"]
    model(torch.randn(3, 4, 8)).sum().backward()  # trains and runs other shapes


def test_literal_initial_state_keeps_the_hidden_size() -> None:
    """A zero state written with a literal size (``torch.zeros(1, B, 24)``) cannot follow the
    hidden size: the check forward finds it and keeps those channels; the rest is pruned."""
    model, _, report = check(RecurrentStack(nn.GRU, literal_h0=True), torch.randn(2, 6, 8))
    assert model.rnn.hidden_size == 24
    assert model.inp.out_features < 32
    assert any("aten.zeros" in b["reason"] for b in report["boundaries"]), report["boundaries"]


class PaddedEncoder(nn.Module):
    """``nn.TransformerEncoder`` called with a key padding mask: inside, the mask is expanded
    to the head count (``expand(-1, num_heads, -1, -1)``) before it meets the scores."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
        padding[-1, -2:] = True
        return self.out(self.encoder(self.inp(x), src_key_padding_mask=padding)).mean(1)


def test_key_padding_mask_expanded_to_the_heads_leaves_them_prunable():
    """Every index of an expanded dim holds the same values, so the expanded head dim of a
    padding mask follows the heads instead of locking them (the module's ``num_heads`` sets
    the expanded size). Before, the encoder kept all 4 heads of every layer."""
    model, _, report = check(PaddedEncoder(), torch.randn(2, 6, 8))
    heads = [layer.self_attn.num_heads for layer in model.encoder.layers]
    assert all(h < 4 for h in heads), (heads, report["boundaries"])


class Seq2Seq(nn.Module):
    """``nn.Transformer`` between embeddings: the decoder's cross-attention splits its packed
    projection into [E, 2E] (query, then key and value), and ``forward`` checks its inputs'
    width against ``self.d_model``."""

    def __init__(self) -> None:
        super().__init__()
        self.src, self.tgt = nn.Embedding(50, 32), nn.Embedding(50, 32)
        self.transformer = nn.Transformer(32, 4, 2, 2, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 50)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        out = self.transformer(self.src(src), self.tgt(tgt), tgt_mask=causal, tgt_is_causal=True)
        return self.head(out)


def test_transformer_seq2seq_loses_heads_and_width():
    """A [E, 2E] split is one part and two copies of it, so the proportion holds after pruning
    (it locked the cross-attention's keys and values: "uneven split"), and ``d_model`` follows
    the residual width (the check forward failed on it and everything was kept). Every
    attention layer, cross-attention included, loses heads with the residual stream."""
    tokens = (torch.randint(0, 50, (2, 5)), torch.randint(0, 50, (2, 6)))
    model, _, report = check(Seq2Seq(), *tokens)
    t = model.transformer
    attention = [m for m in t.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attention) == 6
    assert all(m.num_heads < 4 and m.embed_dim == t.d_model < 32 for m in attention)
    assert not any("split" in b["reason"] for b in report["boundaries"]), report["boundaries"]


class LiteralExpandAttention(nn.Module):
    """A mask expanded to a head count written as a literal: no attribute holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = 4
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.ffn = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = torch.zeros(b, 1, n, n).expand(-1, 4, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.5)
        return self.ffn(self.proj(out.transpose(1, 2).reshape(b, n, -1)))


def test_literal_expand_size_keeps_what_it_touches():
    """The check forward finds the literal 4 and keeps those heads; the rest is still pruned
    and equals the masked model."""
    model, _, report = check(LiteralExpandAttention(), torch.randn(2, 5, 16))
    assert model.heads == 4 and model.qkv.out_features == 48
    assert model.ffn[0].out_features < 32
    assert any("sizes fixed in code" in b["reason"] for b in report["boundaries"])


class Normed(nn.Module):
    """A weight-normed Conv1d pair (as in WaveNet/HiFi-GAN vocoders) and a spectral-normed head."""

    def __init__(self) -> None:
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.a = wn(nn.Conv1d(4, 16, 3, padding=1))
        self.b = wn(nn.Conv1d(16, 12, 3, padding=1))
        self.head = nn.utils.parametrizations.spectral_norm(nn.Linear(12, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(F.leaky_relu(self.a(x)))
        return self.head(F.leaky_relu(y).mean(-1))


def test_weight_and_spectral_norm_layers_are_pruned():
    """``_weight_norm_interface`` has a rule (``w`` keeps ``v``'s dims, ``g`` its output dim)
    and the size updaters read ``v`` for the weight it makes. Before, the op was a boundary and
    nothing was pruned; with the updaters reached, reading the weight failed."""
    model, _, report = check(Normed(), torch.randn(2, 4, 10))
    assert model.a.out_channels == model.b.in_channels < 16
    assert model.b.out_channels == model.head.in_features < 12
    assert model.a.weight.shape == (model.a.out_channels, 4, 3)
    assert not report["boundaries"], report["boundaries"]


def test_legacy_weight_norm_hook_is_pruned():
    """``nn.utils.weight_norm`` (the pre-parametrization hook: ``weight_g``/``weight_v``) is
    pruned too, and the module's sizes follow ``weight_v``. Its ``weight`` attribute is a
    non-leaf product, which ``copy.deepcopy`` refuses; netslim's copies (the masked reference
    here, teachers and trial copies elsewhere) go through ``copy_model``, which copies it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = nn.Sequential(nn.utils.weight_norm(nn.Linear(8, 32)), nn.ReLU(), nn.Linear(32, 3))
    model, _, _ = check(model, torch.randn(3, 8))
    first = model[0]
    assert first.weight_v.shape == (first.out_features, 8) and first.out_features < 32
    assert first.weight_g.shape == (first.out_features, 1)
    copied = copy_model(model)
    assert copied[0].weight_v is not first.weight_v
    assert torch.equal(copied(torch.ones(2, 8)), model(torch.ones(2, 8)))


class Bags(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(30, 16, mode="max")
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.bag(x))


def test_embedding_bag_dim_is_pruned():
    """nn.EmbeddingBag's embedding dim passes through to the pooled bags (it was a boundary)."""
    model, _, report = check(Bags(), torch.randint(0, 30, (4, 5)))
    assert model.bag.embedding_dim == model.mlp[0].in_features < 16
    assert not report["boundaries"], report["boundaries"]


class Columns(nn.Module):
    """F.unfold to a Linear over patches, and F.unfold then F.fold back to an image."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.patch = nn.Linear(8 * 4, 5)
        self.b = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        cols = F.unfold(y, 2, stride=2)
        image = F.fold(cols * 2, x.shape[-2:], 2, stride=2)
        return self.patch(cols.transpose(1, 2)).mean(1) + self.b(image).mean((2, 3))


def test_unfold_and_fold_keep_channels_prunable():
    """im2col/col2im: each channel is ``kh * kw`` channel-major rows of the column matrix, so a
    channel goes with its rows (both were boundaries)."""
    model, _, report = check(Columns(), torch.randn(1, 3, 6, 6))
    assert model.a.out_channels == model.b.in_channels < 8
    assert model.patch.in_features == 4 * model.a.out_channels
    assert not report["boundaries"], report["boundaries"]


class Windows(nn.Module):
    """Tensor.unfold: overlapping spatial windows (HaloNet's halo), and windows that tile the
    channel dim exactly (a reshape into groups of 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Linear(8, 5)
        self.c = nn.Conv2d(3, 16, 1)
        self.d = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halo = self.a(x).unfold(2, 3, 1).unfold(3, 3, 1)  # (B, C, H-2, W-2, 3, 3)
        pooled = self.b(halo.mean((-1, -2)).permute(0, 2, 3, 1))  # (B, H-2, W-2, 5)
        groups = self.c(x).permute(0, 2, 3, 1).unfold(-1, 4, 4)  # (B, H, W, 4 groups, 4)
        return pooled.mean((1, 2)) + self.d(groups).mean((1, 2, 3))


def test_tensor_unfold_windows_keep_channels_prunable():
    """aten.unfold had no rule: it locked every dim of its input, so no channel before a halo
    was prunable. Overlapping windows lock only the positions; windows that tile a channel dim
    are a reshape of it, so that dim prunes as (groups x taps)."""
    model, _, report = check(Windows(), torch.randn(2, 3, 6, 6))
    assert model.a.out_channels == model.b.in_features < 8
    assert model.c.out_channels < 16 and model.c.out_channels % model.d.in_features == 0
    assert not report["boundaries"], report["boundaries"]


class HandRmsNorm(nn.Module):
    """Like timm's RmsNorm: its own ``normalized_shape`` tuple, checked by ``F.rms_norm``."""

    def __init__(self, n: int, affine: bool = True) -> None:
        super().__init__()
        self.normalized_shape = (n,)
        self.weight = nn.Parameter(torch.rand(n) + 0.5) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, 1e-6)


class QkNormed(nn.Module):
    """A residual stream under hand-written RMS norms, and per-head q/k/v norms (Gemma's ViT)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.norm = HandRmsNorm(16)
        self.q, self.k, self.v = nn.Linear(16, 8), nn.Linear(16, 8), nn.Linear(16, 8)
        self.q_norm, self.v_norm = HandRmsNorm(4), HandRmsNorm(4, affine=False)
        self.out = nn.Linear(8, 16)
        self.head = nn.Linear(16, 3)
        self.num_heads, self.head_dim = 2, 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        y = self.norm(h)
        heads = (self.num_heads, self.head_dim)
        q = self.q_norm(self.q(y).unflatten(-1, heads)).transpose(0, 1)
        k = self.q_norm(self.k(y).unflatten(-1, heads)).transpose(0, 1)
        v = self.v_norm(self.v(y).unflatten(-1, heads)).transpose(0, 1)
        a = torch.softmax(q @ k.transpose(1, 2), -1) @ v
        return self.head(h + self.out(a.transpose(0, 1).flatten(-2)))


def test_hand_written_norm_shapes_follow_the_pruned_dims():
    """A norm module's ``normalized_shape`` tuple follows its weight, or (no weight) the dims
    its statistics reduce over. Before, only nn.LayerNorm/nn.RMSNorm had it updated: the check
    forward failed and the residual width and head dims were locked."""
    model, _, report = check(QkNormed(), torch.randn(5, 6))
    assert (
        model.norm.normalized_shape == tuple(model.norm.weight.shape) == (model.head.in_features,)
    )
    assert model.head.in_features < 16
    assert model.v_norm.normalized_shape == model.q_norm.normalized_shape
    assert model.q_norm.normalized_shape == (model.head_dim,)
    assert model.num_heads * model.head_dim == model.q.out_features < 8
    assert not report["boundaries"], report["boundaries"]


class ScaledAttention(nn.Module):
    """Attention with the scale kept as ``self.scale = head_dim ** -0.5`` (timm's manual path,
    most hand-written attention); ``how`` picks the product, or a scale recomputed at run time
    from the size (with the stored attribute still there, unused)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.num_heads, self.head_dim = 1, 32  # one head: only head_dim can shrink
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(12, 3 * 32)
        self.proj = nn.Linear(32, 12)
        self.mlp = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.how == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        elif self.how == "sdpa_by_name":  # diffusers' Flux names every argument
            out = F.scaled_dot_product_attention(query=q, key=k, value=v, scale=self.scale)
        else:
            scale = q.shape[-1] ** -0.5 if self.how == "runtime" else self.scale
            out = torch.softmax((q @ k.transpose(-2, -1)) * scale, -1) @ v
        return self.mlp(self.proj(out.transpose(1, 2).flatten(2)))


@pytest.mark.parametrize("how", ["stored", "sdpa", "sdpa_by_name"])
def test_a_stored_attention_scale_leaves_head_dim_prunable(how):
    """A scale the module stores is a constant the pruned model keeps, so head_dim may shrink
    (the pruned model equals the masked one). Before, 1/sqrt(head_dim) locked head_dim. SDPA
    called with its arguments by name traces too (it failed: the trace's wrapper took them
    by position only)."""
    model, _, report = check(ScaledAttention(how), torch.randn(2, 5, 12))
    assert model.head_dim < 32 and model.scale == 32**-0.5
    assert model.qkv.out_features == 3 * model.head_dim
    assert not report["boundaries"], report["boundaries"]


def test_a_scale_recomputed_at_run_time_keeps_head_dim():
    """The same value computed from ``q.shape[-1]`` changes with the pruned size: the check
    forward sees the op get another scale, head_dim is locked and the plan remade, and the
    pruned model still equals the masked one."""
    model, _, report = check(ScaledAttention("runtime"), torch.randn(2, 5, 12))
    assert model.head_dim == 32 and model.mlp[0].out_features < 24
    assert any("scale changed" in b["reason"] for b in report["boundaries"]), report


class CosineAttention(nn.Module):
    """Swin-V2's cosine attention: q and k L2-normalised over head_dim (F.normalize)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = 1, 16
        self.qkv = nn.Linear(12, 3 * 16)
        self.proj = nn.Linear(16, 12)
        self.logit_scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.head_dim)).unbind(-2)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.logit_scale, -1)
        return self.proj(attn @ v) + torch.linalg.vector_norm(x, ord=1, dim=-1, keepdim=True)


def test_vector_norms_over_channels_are_width_statistics():
    """A p-norm over a dim (p > 0) equals the norm of the kept entries once the pruned ones
    are zero, so q/k under F.normalize keep head_dim prunable (it was locked as a reduction
    that mixes positions)."""
    model, _, report = check(CosineAttention(), torch.randn(2, 5, 12))
    assert model.head_dim < 16 and model.qkv.out_features == 3 * model.head_dim
    assert not report["boundaries"], report["boundaries"]


class SummedGate(nn.Module):
    """A gate from the sum over channels (ResNeSt/SKNet sum their splits the same way)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.b(h * torch.sigmoid(h.sum(-1, keepdim=True))) + h.nansum(-1, keepdim=True)


def test_sums_over_channels_are_width_statistics():
    """The sum over kept channels is the sum with the pruned ones zeroed (the masked
    reference computes that), so a summed dim stays prunable: it was locked."""
    model, _, report = check(SummedGate(), torch.randn(4, 8))
    assert model.a.out_features == model.b.in_features < 16
    assert not report["boundaries"], report["boundaries"]


class HandRms(nn.Module):
    """RMS norms written out: a sum over channels divided by their count, and an L2 norm
    times count ** -0.5, the count read from the tensor at run time."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 3)
        self.c = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.how == "sum":
            rms = (h.pow(2).sum(-1, keepdim=True) / h.shape[-1]).sqrt()
        else:
            rms = h.norm(dim=-1, keepdim=True) * h.shape[-1] ** -0.5
        return self.b(h / (rms + 1e-6)) + self.c(x)


@pytest.mark.parametrize("how", ["sum", "norm"])
def test_a_hand_written_mean_keeps_the_channels_it_counts(how):
    """Dividing a sum (or scaling a norm) by the count of the channels it reduced is a mean
    whose count the pruned code would recompute; those channels stay, and the rest of the
    model still prunes, equal to the masked model."""
    model, _, report = check(HandRms(how), torch.randn(4, 8))
    assert model.a.out_features == 16 and model.c[0].out_features < 12
    assert any("looks derived from size 16" in b["reason"] for b in report["boundaries"])


class Upsampler(nn.Module):
    """Like diffusers' Upsample2D: asserts its input width against ``self.channels``, and its
    conv maps ``channels`` to ``out_channels`` of the same old size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels, self.out_channels = channels, channels
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UpNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.up = Upsampler(16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.a(x)))


def test_an_int_matching_both_widths_follows_the_modules_input_or_output():
    """``channels`` equals both the conv's old input and output width; when they are pruned
    differently, the module's input decides it (its output for ``out_*``). Before, the
    ambiguous int kept its old size, the assertion failed in the check forward and the
    repair kept the input width whole."""
    config = Channels(ratio=0.5, per_module={"a": 0.5, "up.conv": 0.25})
    model, _, report = check(UpNet(), torch.randn(1, 3, 4, 4), config=config)
    assert model.up.channels == model.a.out_channels == model.up.conv.in_channels < 16
    assert model.up.out_channels == model.up.conv.out_channels != model.up.channels
    assert not report["boundaries"], report["boundaries"]


class LinearAttention(nn.Module):
    """MobileViT-v2's separable attention: ``embed_dim`` is the input width too, but the code
    uses it to split the qkv output."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.qkv = nn.Conv2d(embed_dim, 1 + 2 * embed_dim, 1)
        self.out = nn.Conv2d(embed_dim, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split([1, self.embed_dim, self.embed_dim], dim=1)
        context = (k * torch.softmax(q, dim=-1)).sum(-1, keepdim=True)
        return self.out(torch.relu(v) * context)


class LinearAttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.attn = LinearAttention(16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.a(x)))


def test_an_int_an_op_takes_as_a_size_is_not_read_as_the_input_width():
    """``embed_dim`` equals the input width, but the module's split takes it as the size of
    the key and value parts: when those keep their width it must stay, whatever the input
    does (taking the input's width broke the split and locked the parts)."""
    config = Channels(ratio=0.5, per_module={"a": 0.5, "attn.qkv": 0.0})
    model, _, report = check(LinearAttentionNet(), torch.randn(1, 3, 4, 4), config=config)
    assert model.a.out_channels < 16 and model.attn.embed_dim == 16
    assert not report["boundaries"], report["boundaries"]


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 64)
        self.b = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.glu(self.a(x), -1)
        top, _ = h.topk(2, dim=0)  # along the batch: every channel keeps its own top values
        return self.b(h * torch.sigmoid(top.mean(0)))


def test_glu_halves_and_topk_over_another_dim():
    """GLU's two halves keep the same indices and its output is one half (it was a boundary);
    topk's dim is its third argument (the rule read ``k`` as the dim and failed)."""
    model, _, report = check(Gated(), torch.randn(6, 8))
    assert model.a.out_features == 2 * model.b.in_features < 64
    assert not report["boundaries"], report["boundaries"]


class Decoder(nn.Module):
    """A generator's head: a Linear unflattened into a small feature map by nn.Unflatten."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 64)
        self.unflatten = nn.Unflatten(1, (16, 2, 2))
        self.up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.up(F.relu(self.unflatten(self.fc(z))))))


def test_unflatten_follows_the_channels_and_keeps_the_positions():
    """nn.Unflatten's ``unflattened_size`` follows the pruned channels (it is the view's sizes
    from ``dim`` on), and a conv's input positions are geometry: before, the 2x2 positions
    unflattened from the Linear were pruned like channels and the whole model was kept."""
    model, _, report = check(Decoder(), torch.randn(3, 8))
    channels = model.unflatten.unflattened_size[0]
    assert model.unflatten.unflattened_size == (channels, 2, 2) and channels < 16
    assert model.fc.out_features == 4 * channels == 4 * model.up.in_channels
    assert not report["boundaries"], report["boundaries"]


class SpatialTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 16, 3, padding=1)
        self.localise = nn.Linear(3 * 8 * 8, 6)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.localise(x.flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], 1, 8, 8], align_corners=False)
        return self.head(F.grid_sample(self.features(x), grid, align_corners=False))


def test_grid_sample_passes_channels_through():
    """grid_sampler samples every channel at the grid's points (it was a boundary); the six
    entries of each affine map stay."""
    model, _, _ = check(SpatialTransformer(), torch.randn(2, 3, 8, 8))
    assert model.features.out_channels == model.head.in_channels < 16
    assert model.localise.out_features == 6


class BilinearFusion(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = nn.Linear(4, 16), nn.Linear(4, 12)
        self.fuse = nn.Bilinear(16, 12, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fuse(self.left(x), self.right(x))))


def test_bilinear_layer_prunes_both_inputs_and_its_output():
    """F.bilinear is aten._trilinear; its rule ties each input's dims to the weight's at the
    same position (it was a boundary and nothing around nn.Bilinear was pruned)."""
    model, _, report = check(BilinearFusion(), torch.randn(3, 4))
    fuse = model.fuse
    assert fuse.in1_features == model.left.out_features < 16
    assert fuse.in2_features == model.right.out_features < 12
    assert fuse.out_features == model.head.in_features < 8
    assert not report["boundaries"], report["boundaries"]


class ScaledEmbedding(nn.Module):
    """Gemma's embedding: looked-up rows times a stored sqrt(width)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.register_buffer("scale", torch.tensor(4.0), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(ids) * self.scale)


def test_stored_scale_derived_from_a_width_keeps_it_on_the_meta_trace():
    """A scalar buffer equal to sqrt(width) is read from the model when the trace runs on meta
    twins (reading the twin raised 'Tensor.item() cannot be called on meta tensors' and the op
    was locked for that error); the width is kept for the stated reason, the rest pruned."""
    model, _, report = check(ScaledEmbedding(), torch.randint(0, 50, (2, 5)))
    assert model.embed.embedding_dim == 16 and model.mlp[0].out_features < 32
    reasons = [b["reason"] for b in report["boundaries"]]
    assert any("looks derived from size 16" in r for r in reasons), reasons
    assert not any("RuntimeError" in r for r in reasons), reasons


class Correlation(nn.Module):
    """RAFT's correlation volume: feature dot products divided by sqrt of the channel count,
    computed from the runtime shape."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 16, 3, padding=1)
        self.context = nn.Conv2d(3, 12, 3, padding=1)
        self.head = nn.Conv2d(16 + 12, 2, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        f1, f2 = self.features(a), self.features(b)
        n, c, h, w = f1.shape
        corr = torch.matmul(f1.view(n, c, h * w).transpose(1, 2), f2.view(n, c, h * w))
        corr = corr / torch.sqrt(torch.tensor(c))
        volume = corr.view(n, h * w, h, w)
        return self.head(torch.cat([volume, self.context(a)], 1))


def test_scale_from_a_summed_size_keeps_that_size():
    """A scale computed at run time from the size a product summed over follows the pruned
    size, which the masked original does not: that size is kept (RAFT's pruned flow was off
    by 0.7). Scalars made from numbers by ops (``torch.tensor(c).sqrt()``) count as numbers."""
    model, _, report = check(Correlation(), torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4))
    assert model.features.out_channels == 16
    assert model.context.out_channels < 12
    reasons = [b["reason"] for b in report["boundaries"]]
    assert any("looks derived from size 16" in r for r in reasons), reasons


class SplitPaths(nn.Module):
    """timm's SelectiveKernel input split: the part size is an expression of two attributes."""

    def __init__(self, in_channels: int = 16, num_paths: int = 2) -> None:
        super().__init__()
        self.in_channels, self.num_paths = in_channels, num_paths
        part = in_channels // num_paths
        self.paths = nn.ModuleList(nn.Conv2d(part, 8, 3, padding=1) for _ in range(num_paths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.in_channels // self.num_paths, 1)
        return sum(path(p) for path, p in zip(self.paths, parts, strict=True))


class SplitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = SplitPaths()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.block(F.relu(self.stem(x)))))


def test_split_size_computed_from_the_whole_follows_it():
    """``x.split(self.in_channels // self.num_paths)``: no attribute holds the part size, so
    ``in_channels`` (the whole, in the module that split) follows. Before, the check forward
    found the old part size and the repairs kept every channel of skresnet18."""
    model, _, report = check(SplitNet(), torch.randn(1, 3, 6, 6))
    assert model.stem.out_channels == model.block.in_channels < 16
    assert all(p.in_channels == model.block.in_channels // 2 for p in model.block.paths)
    assert not report["boundaries"], report["boundaries"]


class SplitByTuple(nn.Module):
    """inception_next's token mixer: split sizes kept as a tuple attribute."""

    def __init__(self, channels: int = 32, branch: int = 8) -> None:
        super().__init__()
        self.split_indexes = (channels - 2 * branch, branch, branch)
        self.square = nn.Conv2d(branch, branch, 3, padding=1, groups=branch)
        self.band = nn.Conv2d(branch, branch, (1, 5), padding=(0, 2), groups=branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, square, band = torch.split(x, self.split_indexes, dim=1)
        return torch.cat((identity, self.square(square), self.band(band)), dim=1)


class TupleSplitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.mixer = SplitByTuple()
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.mixer(F.relu(self.stem(x)))))


def test_split_sizes_kept_in_a_tuple_follow_the_parts():
    """A tuple attribute equal to a split's size list is replaced by the pruned sizes (the
    identity part is a whole number of the branch size, so every part keeps a share). Before,
    the check forward failed on the old sizes and the repairs kept the split's channels."""
    model, _, report = check(TupleSplitNet(), torch.randn(1, 3, 6, 6))
    identity, square, band = model.mixer.split_indexes
    assert square == band == model.mixer.square.in_channels < 8
    assert identity + square + band == model.stem.out_channels < 32
    assert not report["boundaries"], report["boundaries"]


class AffineFreeNorms(nn.Module):
    """Norms without parameters (DiT's adaptive LayerNorm, a GroupNorm with affine=False)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 32)
        self.ln = nn.LayerNorm(32, elementwise_affine=False)
        self.b = nn.Linear(32, 16)
        self.gn = nn.GroupNorm(4, 16, affine=False)
        self.c = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(F.gelu(self.ln(self.a(x))))
        return self.c(self.gn(h.unsqueeze(-1)).squeeze(-1))


def test_norms_without_parameters_follow_their_width():
    """A norm with no weight has no tensor to change, so its size updater never ran: the check
    forward failed on the old normalized_shape and the repairs kept the width (DiT's blocks)."""
    model, _, report = check(AffineFreeNorms(), torch.randn(3, 8))
    assert model.ln.normalized_shape == (model.a.out_features,) and model.a.out_features < 32
    assert model.gn.num_channels == model.b.out_features < 16
    assert not report["boundaries"], report["boundaries"]


class CrossModal(nn.Module):
    """nn.MultiheadAttention whose keys and values have their own width (kdim, vdim)."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(8, 32)
        self.memory = nn.Linear(6, 24)
        self.attention = nn.MultiheadAttention(32, 4, kdim=24, vdim=24, batch_first=True)
        self.out = nn.Linear(32, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        memory = self.memory(b)
        return self.out(self.attention(self.query(a), memory, memory)[0]).mean(1)


def test_attention_with_own_key_and_value_widths_is_pruned():
    """Only the query's width is tied to the attention's inner and output widths; the keys' and
    values' widths shrink on their own (kdim/vdim follow). Before, all were tied to one space,
    which failed ('size 24 != 32') and kept every channel around the attention."""
    model, _, report = check(CrossModal(), torch.randn(2, 5, 8), torch.randn(2, 7, 6))
    attention = model.attention
    assert attention.kdim == attention.vdim == model.memory.out_features < 24
    assert attention.k_proj_weight.shape[1] == attention.kdim
    assert model.query.out_features < 32 or attention.num_heads < 4
    assert not any("!=" in b["reason"] for b in report["boundaries"]), report["boundaries"]


class VectorQuantizer(nn.Module):
    """A VQ bottleneck: each feature vector replaced by its nearest codebook row (torch.cdist)."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Conv2d(3, 16, 3, padding=1)
        self.codebook = nn.Parameter(torch.randn(10, 16))
        self.decode = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        n, c, h, w = z.shape
        distances = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, c), self.codebook)
        codes = self.codebook[distances.argmin(1)].view(n, h, w, c).permute(0, 3, 1, 2)
        return self.decode(z + (codes - z))


def test_codebook_distances_keep_the_latent_prunable():
    """cdist sums over the dim its two inputs share; a pruned index is zero in both in the
    masked original. The latent and the codebook lose it together (cdist was a boundary)."""
    model, _, report = check(VectorQuantizer(), torch.randn(1, 3, 4, 4))
    assert model.codebook.shape == (10, model.encode.out_channels)
    assert model.encode.out_channels == model.decode.in_channels < 16
    assert not any("cdist" in b["reason"] for b in report["boundaries"]), report["boundaries"]


class BlurPool(nn.Module):
    """timm's BlurPool2d: a fixed depthwise blur filter held as a buffer, groups from an int."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", torch.full((channels, 1, 3, 3), 1 / 9), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, [1, 1, 1, 1]), self.filt, stride=2, groups=self.channels)


class BlurNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.blur = BlurPool(16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blur(F.relu(self.conv(x))))


def test_int_attribute_follows_a_buffer_dim():
    """An int equal to the old size of a module's own *buffer* dim follows it, as one equal to
    a parameter dim does: the blur's ``channels`` (its conv groups) shrinks with its filter.
    Before, the check forward failed on the old groups and the repairs kept the channels."""
    model, _, report = check(BlurNet(), torch.randn(1, 3, 8, 8))
    assert model.blur.channels == model.blur.filt.shape[0] == model.conv.out_channels < 16
    assert not report["boundaries"], report["boundaries"]


class MaskedFrames(nn.Module):
    """wav2vec2-style training: a learned embedding written into masked frames and a dropout
    mask drawn with ``bernoulli_``, both only in train mode (so the engine also traces a
    train-mode forward for the embedding the eval forward never uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.mask_embed = nn.Parameter(torch.randn(32))
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        if self.training:
            frames = torch.zeros(h.shape[:2], dtype=torch.bool)
            frames[:, 0] = True
            h = h.clone()
            h[frames] = self.mask_embed.to(h.dtype)
            h = h * torch.empty_like(h).bernoulli_(0.9) / 0.9
        return self.out(h).mean(1)


def test_train_only_index_put_and_dropout_mask_keep_channels_prunable():
    """``index_put_`` fills whole rows (the values' dims are the rows' dims) and ``bernoulli_``
    keeps its tensor's dims; both were boundaries that, met in the train-mode trace, locked
    the channels they touched (wav2vec2 kept every attention head)."""
    model, _, report = check(MaskedFrames(), torch.randn(2, 5, 8))
    assert model.inp.out_features == model.mask_embed.shape[0] == model.out.in_features < 32
    ops = {b["op"] for b in report["boundaries"]}  # the frame mask's own select may stay
    assert not ops & {"bernoulli_", "index_put_"}, report["boundaries"]
    model.train()
    assert model(torch.randn(2, 5, 8)).shape == (2, 3)
