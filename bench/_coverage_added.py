"""Models people bring (issue #18), built offline from configs with random weights: Ultralytics
YOLO v8/11 (all five tasks), diffusers' UNet2DConditionModel and AutoencoderKL, open_clip's
ViT CLIP, segment-anything's image encoder, Hugging Face Whisper encoder, T5 encoder, DETR,
ConvNeXt V2 and Mamba, timm's EfficientNetV2 and MobileNetV4 variants not in the anchor list.
Sizes are small so both tools finish on a laptop CPU (stated in docs/coverage.md)."""

from __future__ import annotations

import os

import torch
from torch import nn

YOLO = tuple(
    f"{v}n{task}" for v in ("yolov8", "yolo11") for task in ("", "-seg", "-pose", "-cls", "-obb")
)
DIFFUSERS = ("UNet2DConditionModel", "AutoencoderKL")
OPEN_CLIP = ("ViT-S-32",)
SAM = ("image_encoder_vit",)
HF = (
    "WhisperEncoder",
    "T5EncoderModel",
    "DetrForObjectDetection",
    "ConvNextV2ForImageClassification",
    "MambaForCausalLM",
)
TIMM = (
    "efficientnetv2_rw_t",
    "tf_efficientnetv2_b0",
    "mobilenetv4_conv_medium",
    "mobilenetv4_hybrid_medium",
)


def added_models() -> list[tuple[str, str]]:
    return (
        [("yolo", n) for n in YOLO]
        + [("diffusers", n) for n in DIFFUSERS]
        + [("open_clip", n) for n in OPEN_CLIP]
        + [("sam", n) for n in SAM]
        + [("hf", n) for n in HF]
        + [("timm", n) for n in TIMM]
    )


ADDED = frozenset(f"{f}/{n}" for f, n in added_models())


def build_added(family: str, name: str) -> tuple[nn.Module, tuple]:
    """(model, example inputs) for one of the added models (caller seeds and sets eval)."""
    if family == "yolo":
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO as Yolo

        return Yolo(f"{name}.yaml").model, (torch.randn(1, 3, 160, 160),)
    if family == "diffusers":
        import diffusers

        if name == "UNet2DConditionModel":
            model = diffusers.UNet2DConditionModel(
                sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32,
                attention_head_dim=4,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            )  # fmt: skip
            inputs = (torch.randn(1, 4, 16, 16), torch.tensor([10.0]), torch.randn(1, 8, 32))
            return model, inputs
        model = diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
            layers_per_block=1, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        )  # fmt: skip
        return model, (torch.randn(1, 3, 32, 32),)
    if family == "open_clip":
        import open_clip

        model = open_clip.create_model(name, pretrained=None)
        text = torch.randint(1, 49408, (1, 77))
        return model, (torch.randn(1, 3, 224, 224), text)
    if family == "sam":
        from functools import partial

        from segment_anything.modeling import ImageEncoderViT

        model = ImageEncoderViT(
            img_size=256, patch_size=16, embed_dim=192, depth=4, num_heads=4, out_chans=64,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=7,
            global_attn_indexes=(1, 3),
        )  # fmt: skip
        return model, (torch.randn(1, 3, 256, 256),)
    if family == "hf":
        return _hf(name)
    if family == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))
        return model, (torch.randn(1, *size),)
    raise KeyError(f"{family}/{name}")


def _hf(name: str) -> tuple[nn.Module, tuple]:
    import transformers as tr

    if name == "WhisperEncoder":
        cfg = tr.WhisperConfig(
            d_model=256, encoder_layers=4, encoder_attention_heads=8, encoder_ffn_dim=1024,
            decoder_layers=1, decoder_attention_heads=8, num_mel_bins=80,
            max_source_positions=100,
        )  # fmt: skip
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        model = WhisperEncoder(cfg)
        return model, (torch.randn(1, 80, 200),)
    if name == "T5EncoderModel":
        cfg = tr.T5Config(
            vocab_size=8000, d_model=256, d_kv=32, d_ff=1024, num_layers=4, num_heads=8
        )
        return tr.T5EncoderModel(cfg), (torch.randint(0, 8000, (1, 32)),)
    if name == "DetrForObjectDetection":
        cfg = tr.DetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False,
            backbone_config=tr.ResNetConfig(
                depths=[1, 1, 1, 1], hidden_sizes=[64, 128, 256, 512], layer_type="basic",
                out_features=["stage4"],
            ),
            d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=8,
            decoder_attention_heads=8, encoder_ffn_dim=512, decoder_ffn_dim=512,
            num_queries=20, num_labels=10,
        )  # fmt: skip
        return tr.DetrForObjectDetection(cfg), (torch.randn(1, 3, 128, 128),)
    if name == "ConvNextV2ForImageClassification":
        cfg = tr.ConvNextV2Config(depths=[1, 1, 2, 1], hidden_sizes=[48, 96, 192, 384])
        return tr.ConvNextV2ForImageClassification(cfg), (torch.randn(1, 3, 128, 128),)
    if name == "MambaForCausalLM":
        cfg = tr.MambaConfig(
            vocab_size=8000, hidden_size=256, state_size=16, num_hidden_layers=4, expand=2,
            conv_kernel=4, use_cache=False,
        )  # fmt: skip
        return tr.MambaForCausalLM(cfg), (torch.randint(0, 8000, (1, 32)),)
    raise KeyError(name)


def tp_ignored_added(family: str, name: str, model: nn.Module) -> list[nn.Module]:
    """Output layers kept whole for Torch-Pruning, as its examples do (YOLO: the whole head,
    as TP's yolov8 example; others: the layers that produce the model's outputs)."""
    if family == "yolo":
        return [model.model[-1]]
    keys = {
        "diffusers": ("conv_out", "quant_conv", "post_quant_conv"),
        "open_clip": ("proj", "text_projection", "head"),
        "sam": ("neck",),
        "hf": ("lm_head", "classifier", "class_labels_classifier", "bbox_predictor"),
        "timm": ("classifier", "head"),
    }.get(family, ())
    return [m for n, m in model.named_modules() if n and n.split(".")[-1] in keys]
