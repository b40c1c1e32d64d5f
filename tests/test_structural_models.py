"""Structural pruning on real architectures (random init): pruned == masked original."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netslim.structural import Channels, prune_and_compare
from netslim.structural.atoms import Atoms
from netslim.structural.groups import Group
from netslim.structural.ties import CountTie, tied_counts

TOL = 1e-5


def randomize_bn(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5", "densenet121"])
def test_torchvision(name):
    tv = pytest.importorskip("torchvision")
    model = randomize_bn(getattr(tv.models, name)(num_classes=10))
    x = torch.randn(1, 3, 64, 64)
    diff, plan, report = prune_and_compare(
        model, (x,), Channels(ratio=0.5), check_inputs=(torch.randn(2, 3, 64, 64),)
    )
    assert diff <= TOL
    assert report["params"]["after"] < 0.6 * report["params"]["before"]
    assert sum(p.numel() for p in model.parameters()) == report["params"]["after"]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_resnet_global_scope_and_round_to():
    tv = pytest.importorskip("torchvision")
    model = randomize_bn(tv.models.resnet18(num_classes=10))
    cfg = Channels(ratio=0.4, scope="global", round_to=8, criterion="l1")
    diff, plan, report = prune_and_compare(model, (torch.randn(1, 3, 32, 32),), cfg)
    assert diff <= TOL
    assert all(len(k) % 8 == 0 for k in plan.keep.values())
    sizes = {len(k) / plan.sizes[g] for g, k in plan.keep.items()}
    assert len(sizes) > 1  # global ranking: groups pruned unevenly


def test_timm_vit():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=10
    ).eval()
    diff, plan, report = prune_and_compare(model, (torch.randn(1, 3, 32, 32),))
    assert diff <= TOL
    attn = model.blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 2 * attn.head_dim
    assert model.embed_dim == model.blocks[0].norm1.normalized_shape[0] < 192
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_hf_bert():
    from tiny_hf import tiny_bert

    model = tiny_bert(hidden_size=64, intermediate_size=128, max_position_embeddings=32)
    ids = torch.randint(0, 100, (1, 8))
    diff, plan, report = prune_and_compare(
        model, (ids,), check_inputs=(torch.randint(0, 100, (2, 8)),)
    )
    assert diff <= TOL
    attn = model.encoder.layer[0].attention.self
    assert attn.num_attention_heads == 2 and attn.all_head_size == 32
    assert model.config.num_attention_heads == 2
    out = model(torch.randint(0, 100, (2, 5)), attention_mask=torch.ones(2, 5, dtype=torch.long))
    assert out.last_hidden_state.shape == (2, 5, 64)


def test_hf_llama_gqa():
    from tiny_hf import tiny_llama

    model = tiny_llama(hidden_size=64, intermediate_size=128, max_position_embeddings=32)
    ids = torch.randint(0, 100, (1, 8))
    diff, plan, report = prune_and_compare(
        model, (ids,), check_inputs=(torch.randint(0, 100, (1, 8)),)
    )
    assert diff <= TOL
    layer = model.model.layers[0].self_attn
    assert layer.k_proj.out_features == 16 and layer.q_proj.out_features == 32  # 1 KV head, its 2 Q
    assert model.config.num_key_value_heads == 1 and model.config.num_attention_heads == 2
    assert model.config.hidden_size == model.model.embed_tokens.embedding_dim == 32
    # forward and generation with no user fix-ups; other lengths and a padding mask
    mask = torch.tensor([[0, 1, 1, 1, 1]])
    logits = model(torch.randint(0, 100, (1, 5)), attention_mask=mask).logits
    assert logits.shape == (1, 5, 100)
    gen = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert gen.shape == (1, 11)


def test_timm_swin_shifted_windows():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=4,
        depths=(1, 1, 1, 1), num_classes=10,
    ).eval()  # fmt: skip
    diff, plan, report = prune_and_compare(model, (torch.randn(1, 3, 64, 64),))
    assert diff <= TOL
    assert report["params"]["after"] < 0.5 * report["params"]["before"]


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "inception_v3"])
def test_more_torchvision(name):
    tv = pytest.importorskip("torchvision")
    kwargs = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
    model = randomize_bn(getattr(tv.models, name)(num_classes=10, **kwargs))
    size = 80 if name == "inception_v3" else 32
    diff, _, report = prune_and_compare(model, (torch.randn(1, 3, size, size),))
    assert diff <= TOL and not report["boundaries"]
    assert report["params"]["after"] < report["params"]["before"]


class _AuxNet(nn.Module):
    """An auxiliary head that runs only in train mode (as Inception's): its parameters are
    unused by the eval trace, yet its input channels get pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)
        self.aux = nn.Sequential(nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.Flatten(1), nn.Dropout(),
                                 nn.LazyLinear(10))  # fmt: skip

    def forward(self, x):
        h = torch.relu(self.bn(self.c1(x)))
        out = self.fc(self.c2(h).mean((2, 3)))
        if self.training:
            return out, self.aux(torch.nn.functional.adaptive_avg_pool2d(h, 1))
        return out


def test_train_only_head_keeps_train_forward_working():
    model = _AuxNet()
    model(torch.randn(2, 3, 8, 8))  # materialise the lazy layer
    model = randomize_bn(model)
    tracked = model.bn.num_batches_tracked.item()
    diff, _, report = prune_and_compare(model, (torch.randn(1, 3, 8, 8),))
    assert model.bn.num_batches_tracked.item() == tracked  # the trace restored the BN buffers
    assert diff <= TOL and not report["boundaries"]
    assert model.aux[0].in_channels == model.c1.out_channels == 8
    model.train()
    out, aux = model(torch.randn(2, 3, 8, 8))  # train mode still runs after pruning
    assert out.shape == aux.shape == (2, 10)


class _StdConv(nn.Conv2d):
    """Weight standardisation through ``F.batch_norm(training=True)`` (timm's ScaledStdConv2d):
    its statistics run over the fan-in, so removing input channels would change them."""

    def forward(self, x):
        w = torch.nn.functional.batch_norm(
            self.weight.reshape(1, self.out_channels, -1), None, None, training=True, eps=1e-5
        ).reshape_as(self.weight)
        return torch.nn.functional.conv2d(x, w, self.bias, padding=1)


def test_batch_statistics_over_fan_in_are_never_pruned_silently():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), _StdConv(16, 16, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    diff, _, report = prune_and_compare(model, (torch.randn(1, 3, 8, 8),))
    assert diff <= TOL
    assert model[2].in_channels == 16  # the fan-in of the standardised conv is kept whole
    assert model[2].out_channels == 8  # its own filters can still go


class _HeadDimFromWidth(nn.Module):
    """Sizes read off the *input* width, not off qkv: torchvision Swin's and the classic
    ViT's ``c // num_heads`` (``split=True``), or EVA's ``reshape(b, n, c)`` of the heads."""

    def __init__(self, dim: int = 32, heads: int = 4, split: bool = True) -> None:
        super().__init__()
        self.qkv, self.proj, self.num_heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads
        self.split = split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        head_dim = c // self.num_heads if self.split else -1
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1 if self.split else c))


class _Block(nn.Module):
    def __init__(self, dim: int = 32, split: bool = True) -> None:
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(dim), _HeadDimFromWidth(dim, split=split)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("ratio", [0.3, 0.4])
def test_width_the_code_reads_is_tied_to_the_head_count(split, ratio):
    """The failing reshape asks for ``c // num_heads`` (or ``c``) where the weights give
    head_dim (or heads x head_dim): the engine ties the counts (8 channels of the width per
    kept head; the indices stay free) instead of keeping width and heads whole. At these ratios
    the width (32 -> 22 or 19) and the heads (4 -> 3 or 2) would not keep the two equal."""
    model = nn.Sequential(
        nn.Linear(8, 32), _Block(split=split), _Block(split=split), nn.Linear(32, 4)
    ).eval()
    diff, _, report = prune_and_compare(model, (torch.randn(2, 5, 8),), Channels(ratio=ratio))
    assert diff < 1e-5
    width = model[0].out_features
    assert width < 32
    for block in (model[1], model[2]):
        assert block.mlp[0].out_features < 64
        assert block.attn.num_heads < 4 and width == 8 * block.attn.num_heads
    assert any("counts tied" in n for n in report["notes"])
    assert not any("fixed in code" in b["reason"] for b in report["boundaries"])


class _HeadDimIsWidth(nn.Module):
    """Hiera's blocks: ``head_dim`` happens to equal the block's input width (the inner width
    is heads x head_dim), and the reshape takes ``self.head_dim``."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim
        self.qkv, self.proj = nn.Linear(dim, 3 * heads * dim), nn.Linear(heads * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # keeps head_dim
        return x + self.proj(y.transpose(1, 2).reshape(b, n, -1))


def test_int_a_reshape_takes_is_not_read_as_an_equal_weight_width():
    model = nn.Sequential(nn.Linear(4, 8), _HeadDimIsWidth(), nn.Linear(8, 3)).eval()
    diff, _, report = prune_and_compare(model, (torch.randn(2, 5, 4),))
    assert diff < 1e-5
    assert model[0].out_features == 4 and model[1].head_dim == 8  # the width went, head_dim not
    assert not any("fixed in code" in b["reason"] for b in report["boundaries"])


class _FixedOutputWidth(nn.Module):
    """Attention whose output reshape takes a literal width: sizes fixed in code, which no
    count tie explains."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.num_heads, self.head_dim = heads, dim // heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        return x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, 32))


def test_a_count_tie_that_does_not_explain_a_failure_is_released(monkeypatch):
    """A tie is read off one failing op; when the op fails again under it, the tie explained
    nothing: it is released (and never made again for that op) so that it stops constraining
    the plan, and the usual repair keeps what the code fixes. Here a wrong reading ties the
    residual width to the heads (8 channels per head); kept, it would hold the width whole once
    the repair locks the heads."""
    from netslim.structural import engine, ties

    def misread(graph, rec, got, kept):  # the real reading finds nothing for a literal size
        found, whole = ties.find_ties(graph, rec, got, kept)
        if found or rec.module != "1":
            return found, whole
        A = graph.atoms
        heads = next(a for a in kept if A.size(a) == 4)
        width = next(a for a in kept if A.size(a) == 32)  # the residual (first leaf of 32)
        return ties._tie(A, width, heads, 8), []

    monkeypatch.setattr(engine, "find_ties", misread)
    model = nn.Sequential(nn.Linear(8, 32), _FixedOutputWidth(), nn.Linear(32, 4)).eval()
    diff, _, report = prune_and_compare(model, (torch.randn(2, 5, 8),), Channels(ratio=0.5))
    assert diff < 1e-5
    assert any("count tie was released" in n for n in report["notes"])
    assert model[1].num_heads == 4  # the literal 32 keeps heads x head_dim whole
    assert model[0].out_features < 32  # and the residual width is free again


def test_tied_counts_keep_whole_heads_and_whole_sides():
    atoms = Atoms()
    wide, heads, other = atoms.new(64), atoms.new(4), atoms.new(4)
    groups = [Group("w", wide, 64), Group("h", heads, 4), Group("o", other, 4)]
    tie = [CountTie(wide, heads, 16)]
    # 40 channels: 2.5 heads -> the nearest whole number (up), the width follows
    assert tied_counts({"w": 40, "h": 1, "o": 2}, tie, groups, atoms) == {"w": 48, "h": 3, "o": 2}
    assert tied_counts({"w": 3, "h": 4}, tie, groups, atoms) == {"w": 16, "h": 1}  # >= 1 head
    # a side that may not shrink keeps the other whole
    assert tied_counts({"w": 40}, tie, groups[:1], atoms) == {"w": 64}
    assert tied_counts({"h": 2}, tie, groups[1:], atoms) == {"h": 4}
    # two heads tied to one width at different widths per head: nothing consistent, all whole
    ties = tie + [CountTie(wide, other, 8)]
    assert tied_counts({"w": 32, "h": 2, "o": 4}, ties, groups, atoms) == {"w": 64, "h": 4, "o": 4}


class _TinyDetector(nn.Module):
    """Scores per anchor, then NMS: every shape after ``nms`` depends on the values."""

    def __init__(self, threshold: bool = False) -> None:
        super().__init__()
        self.threshold = threshold  # x[scores > t] first, as RetinaNet/FCOS/SSD heads do
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.score = nn.Conv2d(16, 1, 1)
        self.embed = nn.Linear(16, 4)
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(64, 2, generator=g) * 50
        self.register_buffer("boxes", torch.cat([xy, xy + 8], 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.ops import nms

        feats = self.backbone(x)
        scores = self.score(feats).flatten()
        per_anchor = feats.flatten(2)[0].T  # (64, 16)
        boxes = self.boxes
        if self.threshold:
            above = scores > scores.mean()
            scores, boxes, per_anchor = scores[above], boxes[above], per_anchor[above]
        keep = nms(boxes, scores, 0.3)
        return scores, self.embed(per_anchor[keep])


@pytest.mark.parametrize("threshold", [False, True])
def test_data_dependent_shapes_after_nms_do_not_block_pruning(threshold: bool):
    pytest.importorskip("torchvision")
    model = _TinyDetector(threshold).eval()
    x = torch.randn(1, 3, 8, 8)
    diff, _, report = prune_and_compare(model, (x,), Channels(ratio=0.5))
    assert diff < 1e-5 and model.backbone[0].out_channels == 8
    assert report["groups"]["pruned"] >= 1


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_hf_mixture_of_experts(family: str, tmp_path):
    """transformers' experts keep their weights stacked ``(experts, out, in)`` and run one
    grouped matmul per projection (``aten._grouped_mm``, which had no rule: every expert was
    kept). Each expert width now loses the same indices in every expert; the expert count, the
    router's outputs and ``num_local_experts`` stay (a head count of 4 once renamed the root's
    ``num_experts``); the config follows, so stock ``from_pretrained`` reloads it exactly."""
    import tiny_hf

    transformers = pytest.importorskip("transformers")
    model = getattr(tiny_hf, f"tiny_{family}")()
    config = model.config
    experts_before = getattr(config, "num_local_experts", None) or config.num_experts
    ids = torch.randint(0, 100, (1, 8))
    diff, _, _ = prune_and_compare(model, (ids,), check_inputs=(torch.randint(0, 100, (2, 6)),))
    assert diff <= TOL
    experts = model.model.layers[0].mlp.experts
    width = config.moe_intermediate_size if family == "qwen2_moe" else config.intermediate_size
    assert experts.gate_up_proj.shape == (experts_before, 2 * width, config.hidden_size)
    assert width < (24 if family == "qwen2_moe" else 64) and config.hidden_size < 32
    assert (getattr(config, "num_local_experts", None) or config.num_experts) == experts_before
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert reloaded.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0).shape == (
        1,
        10,
    )


class _AroundAttention(nn.Module):
    """A conv, one of timm's convolutional attention layers, a conv: the attention's widths are
    pruned between two prunable layers."""

    def __init__(self, attn: nn.Module, dim: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.attn = attn
        self.head = nn.Conv2d(dim, 10, 1)

    def forward(self, x):
        return self.head(self.attn(torch.relu(self.stem(x)))).mean((2, 3))


@pytest.mark.parametrize(
    ("kind", "size"),
    [
        ("halo", (4, 4)),  # one block of 4 and 4 heads: the heads' 4 is not the block's
        ("halo", (8, 4)),  # also batch x heads x blocks == 8 == each head's value width
        ("bottleneck", (8, 8)),  # 8 x 8 positions, 8 channels per query/key head
    ],
)
def test_timm_local_attention_sizes_equal_to_head_counts(kind, size):
    """HaloAttn / BottleneckAttn hold spatial sizes (``block_size``, the position table's
    ``height``) equal to head counts or head widths: the pruned heads must not drag them along,
    and a value the code derives from shapes (B x heads x blocks) must not rewrite an int that
    merely equals it; the attention is pruned, not kept whole."""
    pytest.importorskip("timm")
    from timm.layers.bottleneck_attn import BottleneckAttn
    from timm.layers.halo_attn import HaloAttn

    torch.manual_seed(0)
    if kind == "halo":
        attn = HaloAttn(32, num_heads=4, block_size=4, halo_size=1)
    else:
        attn = BottleneckAttn(32, feat_size=size, num_heads=2, qk_ratio=0.5)
    model = _AroundAttention(attn, 32).eval()
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    diff, _, report = prune_and_compare(model, (torch.randn(1, 3, *size),))
    assert diff <= TOL
    # the relative-position trick (pad, flatten, slice) stays whole; no size is left stale
    assert not [b for b in report["boundaries"] if "sizes fixed in code" in b["reason"]]
    pruned = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
              and m.out_channels < widths[n]}  # fmt: skip
    assert {n for n in widths if n.startswith("attn.")} <= pruned
    if kind == "halo":
        assert (attn.block_size, attn.pos_embed.block_size) == (4, 4)
    else:
        assert (attn.pos_embed.height, attn.pos_embed.width) == size
