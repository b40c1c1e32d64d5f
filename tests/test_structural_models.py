"""Structural pruning on real architectures (random init): pruned == masked original."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netslim.structural import Channels, prune_and_compare

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


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
    tr = pytest.importorskip("transformers")
    cfg = tr.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=100, max_position_embeddings=32,
    )  # fmt: skip
    model = tr.BertModel(cfg).eval()
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
    tr = pytest.importorskip("transformers")
    cfg = tr.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=100, max_position_embeddings=32,
    )  # fmt: skip
    model = tr.LlamaForCausalLM(cfg).eval()
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
