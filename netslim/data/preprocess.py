"""The model's own image preprocessing, so a pruned model is trained and scored on what it expects.

In order: a timm model's data config (``timm.data.resolve_model_data_config``: size, crop,
interpolation, mean/std); the transforms of the torchvision weights its spec names; otherwise a
default derived from the data: the model's input channels (first convolution; netslim's zoo is
built for the data's), the zoo's 28×28 or the data's most common size, and per-channel mean/std
measured on a fixed sample of training images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from netslim.core.history import get_spec

STATS_SAMPLE = 512  # training images read for the default mean/std (a fixed, evenly spaced set)


@dataclass(frozen=True)
class ImagePreprocess:
    """``transform(PIL image) -> C×H×W float tensor``, the shape it makes, and where it came from."""

    transform: Callable[[Any], Tensor]
    input_shape: tuple[int, int, int]
    source: str


def _mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def _converter(channels: int) -> Callable[[Any], Any]:
    mode = _mode(channels)

    def convert(image: Any) -> Any:
        return image if image.mode == mode else image.convert(mode)

    return convert


def _scheme(model: nn.Module | None) -> tuple[str, dict[str, Any]]:
    spec = (get_spec(model) or {}) if model is not None else {}
    return str(spec.get("source", "")).partition(":")[0], dict(spec.get("kwargs") or {})


def image_preprocess(
    model: nn.Module | None,
    channels: int,
    size: tuple[int, int],
    sample: Callable[[int], Sequence[Any]],
) -> ImagePreprocess:
    """The preprocessing for ``model`` on data whose images are usually ``channels`` × ``size``.

    ``sample(n)`` returns up to ``n`` training images (PIL) for the data-derived statistics.
    """
    scheme, kwargs = _scheme(model)
    if scheme == "timm" or (model is not None and hasattr(model, "pretrained_cfg")):
        return _timm(model)
    if scheme == "torchvision" and kwargs.get("weights"):
        return _torchvision_weights(kwargs["weights"])
    return _from_data(model, scheme, channels, size, sample)


def _timm(model: nn.Module) -> ImagePreprocess:
    import timm.data
    from torchvision import transforms

    config = timm.data.resolve_model_data_config(model)
    channels = int(config["input_size"][0])
    transform = transforms.Compose(
        [_converter(channels), timm.data.create_transform(**config, is_training=False)]
    )
    return ImagePreprocess(transform, tuple(config["input_size"]), "timm data config")


def _torchvision_weights(weights: Any) -> ImagePreprocess:
    import torchvision
    from torchvision import transforms

    if isinstance(weights, str):
        weights = torchvision.models.get_weight(weights)
    preset = weights.transforms()
    crop = preset.crop_size[0]
    transform = transforms.Compose([_converter(3), transforms.PILToTensor(), preset])
    return ImagePreprocess(transform, (3, crop, crop), f"torchvision {weights}")


def model_channels(model: nn.Module | None) -> int | None:
    """Input channels of the first 2-D convolution, when there is one."""
    if model is None:
        return None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def _from_data(
    model: nn.Module | None,
    scheme: str,
    channels: int,
    size: tuple[int, int],
    sample: Callable[[int], Sequence[Any]],
) -> ImagePreprocess:
    from torchvision import transforms

    if scheme == "zoo":
        from netslim.models.zoo import IMAGE_SIZE

        size = (IMAGE_SIZE, IMAGE_SIZE)
    channels = model_channels(model) or channels
    base = [_converter(channels)]
    if size is not None:
        base.append(transforms.Resize(size, antialias=True))
    base.append(transforms.ToTensor())
    to_tensor = transforms.Compose(base)
    images = [to_tensor(image) for image in sample(STATS_SAMPLE)]
    if images and all(t.shape == images[0].shape for t in images):
        stacked = torch.stack(images).transpose(0, 1).reshape(channels, -1)
        mean = stacked.mean(dim=1).tolist()
        std = [s if s > 1e-6 else 1.0 for s in stacked.std(dim=1).tolist()]
    else:
        mean, std = [0.5] * channels, [0.5] * channels
    transform = transforms.Compose([to_tensor, transforms.Normalize(mean, std)])
    stats = ", ".join(f"{m:.3f}/{s:.3f}" for m, s in zip(mean, std, strict=True))
    return ImagePreprocess(
        transform,
        (channels, *size),
        f"from the data: resize to {size[0]}x{size[1]}, {_mode(channels)}, mean/std {stats}",
    )
