"""The coverage zoo: which models, built how, fed what, and how Torch-Pruning is told about them.

Kept apart from the runner so both tools see byte-identical models and inputs (same seed, same
randomised BatchNorm statistics, same input size probe).
"""

from __future__ import annotations

from typing import Any

import torch
from _coverage_added import ADDED, added_models, build_added, tp_ignored_added
from torch import nn

TIMM_MODELS = [
    "beit_base_patch16_224",
    "caformer_s18",
    "coatnet_0_rw_224",
    "convformer_s18",
    "convnext_tiny",
    "convnextv2_tiny",
    "cspdarknet53",
    "deit_small_patch16_224",
    "densenet121",
    "dla34",
    "dpn68",
    "edgenext_small",
    "efficientformer_l1",
    "efficientformerv2_s0",
    "efficientnet_b0",
    "eva02_tiny_patch14_224",
    "fastvit_t8",
    "ghostnet_100",
    "hrnet_w18_small",
    "inception_v4",
    "levit_128",
    "maxvit_tiny_tf_224",
    "mixer_b16_224",
    "mobilenetv3_large_100",
    "mobilenetv4_conv_small",
    "mobilevit_s",
    "mobilevitv2_100",
    "nfnet_l0",
    "poolformer_s12",
    "regnety_016",
    "repvit_m1",
    "resmlp_12_224",
    "resnet50",
    "resnext50_32x4d",
    "rexnet_100",
    "seresnet50",
    "swin_tiny_patch4_window7_224",
    "swinv2_tiny_window8_256",
    "vit_small_patch16_224",
    "xception41",
]  # the anchor file's timm list

HF_MODELS = (
    "BertModel", "GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
    "ViTForImageClassification", "SwinForImageClassification", "ConvNextForImageClassification",
    "ResNetForImageClassification", "MobileNetV2ForImageClassification",
)  # fmt: skip

QUICK = (
    ("torchvision_cls", "resnet18"), ("torchvision_cls", "mobilenet_v3_small"),
    ("torchvision_cls", "vit_b_32"), ("torchvision_seg", "lraspp_mobilenet_v3_large"),
    ("timm", "convnext_tiny"), ("hf", "BertModel"), ("hf", "LlamaForCausalLM"),
)  # fmt: skip

SMALL = 160  # input side tried first; models that refuse it get their own default size
TOKENS = 32  # sequence length for the language models


def all_models() -> list[tuple[str, str]]:
    import torchvision.models as tvm

    out = [("torchvision_cls", n) for n in tvm.list_models(module=tvm)]
    out += [("torchvision_seg", n) for n in tvm.list_models(module=tvm.segmentation)]
    out += [("torchvision_det", n) for n in tvm.list_models(module=tvm.detection)]
    out += [("timm", n) for n in TIMM_MODELS]
    out += [("hf", n) for n in HF_MODELS]
    return out + added_models()


def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics: with the defaults (0 mean, unit var) a wrong channel map can
    still look equivalent."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)


def _unzero(model: nn.Module) -> None:
    """Zero-initialised weights (torchvision ViT's and several timm heads) make every output 0
    and the equivalence check vacuous: give them small random values."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            linear = isinstance(m, (nn.Linear, nn.Conv2d)) and isinstance(w, torch.Tensor)
            if linear and w.numel() and not w.any():
                w.copy_(torch.randn(w.shape, generator=gen) * 0.02)


def _hf(name: str) -> tuple[nn.Module, tuple]:
    """Small configs, random weights (sizes stated in docs/coverage.md)."""
    import transformers as tr

    text = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
            "intermediate_size": 1024, "vocab_size": 8000}  # fmt: skip
    vision = {"image_size": 224}
    if name == "BertModel":
        model = tr.BertModel(tr.BertConfig(**text, max_position_embeddings=128))
    elif name == "GPT2LMHeadModel":
        model = tr.GPT2LMHeadModel(
            tr.GPT2Config(
                n_embd=256, n_layer=4, n_head=8, vocab_size=8000, n_positions=128, use_cache=False
            )
        )
    elif name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"):
        cls = getattr(tr, name)
        cfg_cls = getattr(tr, name.replace("ForCausalLM", "Config"))
        model = cls(
            cfg_cls(**text, num_key_value_heads=2, max_position_embeddings=128, use_cache=False)
        )
    elif name == "ViTForImageClassification":
        model = tr.ViTForImageClassification(
            tr.ViTConfig(**{**text, "vocab_size": None}, **vision, num_labels=1000)
        )
    elif name == "SwinForImageClassification":
        model = tr.SwinForImageClassification(tr.SwinConfig(**vision, num_labels=1000))
    elif name == "ConvNextForImageClassification":
        model = tr.ConvNextForImageClassification(tr.ConvNextConfig(num_labels=1000))
    elif name == "ResNetForImageClassification":
        model = tr.ResNetForImageClassification(tr.ResNetConfig(num_labels=1000))
    elif name == "MobileNetV2ForImageClassification":
        model = tr.MobileNetV2ForImageClassification(tr.MobileNetV2Config(num_labels=1000))
    else:
        raise KeyError(name)
    if name.endswith("ImageClassification"):
        return model, (torch.randn(1, 3, 224, 224),)
    return model, (torch.randint(0, 8000, (1, TOKENS)),)


def _fits(model: nn.Module, inputs: tuple) -> bool:
    try:
        with torch.no_grad():
            model(*inputs)
        return True
    except Exception:
        return False


def build(family: str, name: str, seed: int = 0) -> tuple[nn.Module, tuple, dict[str, Any]]:
    """(model in eval mode, example inputs as a positional tuple, facts about the setup)."""
    torch.manual_seed(seed)
    facts: dict[str, Any] = {}
    if f"{family}/{name}" in ADDED:
        model, inputs = build_added(family, name)
    elif family == "hf":
        model, inputs = _hf(name)
    elif family == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))
        inputs = (torch.randn(1, *size),)
    else:
        import torchvision.models as tvm

        kwargs: dict[str, Any] = {"weights": None}
        if family == "torchvision_cls" and name in ("googlenet", "inception_v3"):
            kwargs["aux_logits"], kwargs["init_weights"] = False, False
        if family in ("torchvision_seg", "torchvision_det"):
            kwargs["weights_backbone"] = None
        if family == "torchvision_det" and not name.startswith("ssd"):
            kwargs["min_size"], kwargs["max_size"] = SMALL * 2, SMALL * 2
        model = tvm.get_model(name, **kwargs)
        if family == "torchvision_det":
            side = 300 if name == "ssd300_vgg16" else 320
            inputs = ([torch.rand(3, side, side)],)
        else:
            inputs = (torch.randn(1, 3, SMALL, SMALL),)
    model.eval()
    _randomize_bn(model)
    _unzero(model)
    if family in ("torchvision_cls", "torchvision_seg") and not _fits(model, inputs):
        inputs = (torch.randn(1, 3, 224, 224),)
    facts["input"] = [list(t.shape) for t in _tensors(inputs)]
    return model, inputs, facts


def check_inputs(family: str, inputs: tuple) -> tuple:
    """Fresh inputs of the same shapes: equivalence must hold off the traced example too."""
    gen = torch.Generator().manual_seed(123)
    if family == "torchvision_det":
        return ([torch.rand(inputs[0][0].shape, generator=gen)],)
    if family == "hf" and not inputs[0].is_floating_point():
        return (torch.randint(0, 8000, inputs[0].shape, generator=gen),)
    return tuple(
        torch.randn(t.shape, generator=gen)
        if t.is_floating_point()
        else torch.randint(0, int(t.max()) + 1, t.shape, generator=gen)
        for t in inputs
    )


def _tensors(obj: Any) -> list[torch.Tensor]:
    from netslim.structural.graph import flatten_tensors

    return flatten_tensors(obj)


# -- Torch-Pruning setup, following the anchor file's method notes -----------------------------


def tp_ignored(family: str, name: str, model: nn.Module) -> list[nn.Module]:
    """Heads kept whole, as TP's own examples do (the anchor file lists them)."""
    if f"{family}/{name}" in ADDED:
        return tp_ignored_added(family, name, model)
    if family == "torchvision_cls":
        n_out = 1000
    elif family == "torchvision_seg":
        n_out = 21
    elif family == "torchvision_det":
        # Whole detection heads (box predictor, RPN, RoI heads, dense heads): TP's example keeps
        # them; we approximate its per-model lists by name.
        keys = ("roi_heads", "rpn", "head")
        return [m for n, m in model.named_modules() if n and any(k in n.split(".") for k in keys)]
    elif family == "timm":
        n_out = model.num_classes
        ignored = [model.get_classifier()] if isinstance(model.get_classifier(), nn.Module) else []
        return ignored + _by_outputs(model, n_out)
    else:
        keys = ("classifier", "pooler", "lm_head")
        return [m for n, m in model.named_modules() if n.split(".")[-1] in keys]
    return _by_outputs(model, n_out)


def _by_outputs(model: nn.Module, n_out: int) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == n_out)
        or (isinstance(m, nn.Conv2d) and m.out_channels == n_out)
    ]


def tp_extra(family: str, name: str, model: nn.Module) -> dict[str, Any]:
    """``num_heads`` (and LLM head settings) where TP's examples pass them."""
    heads: dict[nn.Module, int] = {}
    extra: dict[str, Any] = {}
    if family == "torchvision_cls" and name.startswith("vit_"):
        extra["out_channel_groups"] = {
            m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)
        }
    elif family == "timm":
        for m in model.modules():
            if hasattr(m, "qkv") and isinstance(m.qkv, nn.Linear) and hasattr(m, "num_heads"):
                heads[m.qkv] = m.num_heads
    elif family == "hf":
        for m in model.modules():
            n = getattr(m, "num_attention_heads", None) or getattr(m, "num_heads", None)
            if not isinstance(n, int):
                continue
            for proj in ("q_proj", "k_proj", "v_proj", "query", "key", "value"):
                sub = getattr(m, proj, None)
                if isinstance(sub, nn.Linear):
                    kv = getattr(m, "num_key_value_heads", None)
                    heads[sub] = kv if proj in ("k_proj", "v_proj") and kv else n
        if "CausalLM" in name and name not in ("GPT2LMHeadModel", "MambaForCausalLM"):
            extra.update(prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5)
            extra["round_to"] = 4
    if heads:
        extra["num_heads"] = heads
    return extra


def tp_fixups(family: str, name: str, model: nn.Module) -> None:
    """The attribute fix-ups TP's examples apply after ``step()`` (used only if needed)."""
    if family == "torchvision_cls" and name.startswith("vit_"):
        model.hidden_dim = model.conv_proj.out_channels
    for m in model.modules():
        qkv = getattr(m, "qkv", None)
        if isinstance(qkv, nn.Linear) and hasattr(m, "num_heads") and hasattr(m, "head_dim"):
            m.head_dim = qkv.out_features // (3 * m.num_heads)
            if hasattr(m, "attn_dim"):
                m.attn_dim = m.head_dim * m.num_heads
        for proj, attr in (("q_proj", "head_dim"), ("query", "attention_head_size")):
            sub = getattr(m, proj, None)
            n = getattr(m, "num_attention_heads", None) or getattr(m, "num_heads", None)
            if isinstance(sub, nn.Linear) and isinstance(n, int) and hasattr(m, attr):
                setattr(m, attr, sub.out_features // n)
