"""Model specs: every scheme builds, bad specs fail with a message that says what would be right."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from netslim.core.history import get_spec
from netslim.errors import ConfigError
from netslim.models.spec import build_model, make_example_inputs


@pytest.mark.parametrize(
    "bad", ["lenet300", "zzz:lenet", "zoo:", "torchvision:no_such_net", "timm:no_such_net"]
)
def test_bad_specs(bad: str) -> None:
    with pytest.raises(ConfigError):
        build_model(bad)


def test_py_spec(model_file: Path) -> None:
    model = build_model(f"py:{model_file}:build")
    assert get_spec(model) == {"source": f"py:{model_file}:build", "kwargs": {}}
    with pytest.raises(ConfigError, match="not an nn.Module"):
        build_model(f"py:{model_file}:not_a_model")
    with pytest.raises(ConfigError, match="no callable"):
        build_model(f"py:{model_file}:missing")
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("py:/nope/model.py:build")


def test_hf_spec_needs_a_local_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.json"):
        build_model(f"hf:{tmp_path}")


def test_torchvision_and_timm_specs() -> None:
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")
    model = build_model("torchvision:resnet18", num_classes=7)
    (x,) = make_example_inputs(model)
    assert tuple(x.shape) == (1, 3, 224, 224)
    model = build_model("timm:resnet18", num_classes=5)
    assert get_spec(model)["source"] == "timm:resnet18"


def test_example_inputs_are_token_ids_for_a_model_that_starts_with_an_embedding() -> None:
    """A plain PyTorch text model (no Hugging Face config) gets ids below its vocabulary for a
    (batch, length) shape, so ``--example-shape 2,7`` fits it; an image model does not."""
    text = nn.Sequential(nn.Embedding(30, 8), nn.Flatten(), nn.Linear(8 * 7, 2))
    (ids,) = make_example_inputs(text, (2, 7))
    assert ids.dtype == torch.int64 and ids.shape == (2, 7) and 0 <= ids.min() <= ids.max() < 30
    assert text(ids).shape == (2, 2)
    image = nn.Sequential(nn.Linear(7, 3), nn.Embedding(30, 8))
    assert make_example_inputs(image, (2, 7))[0].is_floating_point()
