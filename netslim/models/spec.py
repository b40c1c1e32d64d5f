"""Model specs: one string names how to build the *unpruned* model.

``zoo:NAME`` (netslim's reference models), ``torchvision:NAME``, ``timm:NAME``, ``hf:PATH`` (a local
Hugging Face directory, loaded offline), ``ultralytics:MODEL.yaml`` (a YOLO architecture from its
yaml, random weights, offline) and ``py:FILE.py:FACTORY`` (a function returning the model).
The spec is remembered on the model so ``netslim.save``/``load`` can rebuild it and replay what was
pruned, without pickling Python objects.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netslim.core.history import get_spec, set_spec
from netslim.errors import ArtifactError, ConfigError, UnsupportedModelError, UntrustedCodeError

SCHEMES = ("zoo", "torchvision", "timm", "hf", "ultralytics", "py")


def parse_spec(source: str) -> tuple[str, str]:
    scheme, sep, rest = source.partition(":")
    if not sep or scheme not in SCHEMES or not rest:
        raise ConfigError(
            f"unknown model spec {source!r}: expected one of "
            + ", ".join(f"{s}:..." for s in SCHEMES)
            + " (e.g. zoo:lenet300, torchvision:resnet18, hf:/path/to/dir, py:model.py:build)"
        )
    return scheme, rest


def build_model(source: str, **kwargs: Any) -> nn.Module:
    """Build the model named by ``source`` (random or packaged weights; never from a hub).

    A ``py:`` spec imports and runs its file: that is the caller's choice when they name it
    themselves. Specs read from a file someone else wrote go through :func:`build_from_spec`.
    """
    scheme, rest = parse_spec(source)
    if scheme == "hf" and kwargs.get("trust_remote_code"):
        raise ConfigError(
            f"{source}: trust_remote_code=True would run Python code from the model directory; "
            "netslim never passes it (load the model yourself if you trust that code)"
        )
    model = _BUILDERS[scheme](rest, **kwargs)
    set_spec(model, {"source": source, "kwargs": kwargs})
    return model


def code_to_run(spec: dict[str, Any]) -> str | None:
    """The file a spec would import and run when built (``py:FILE:FACTORY``), else ``None``."""
    source = str(spec.get("source", ""))
    scheme, _, rest = source.partition(":")
    if scheme == "py":
        return rest.rpartition(":")[0] or rest
    return None


def build_from_spec(
    spec: Any, *, trust_code: bool = False, origin: str = "the artifact"
) -> nn.Module:
    """Rebuild a model from a spec read from a file (``netslim.json``, ``.nsz``, a recipe).

    Nothing from such a file runs as code without consent: a ``py:`` spec (or a Hugging Face
    spec asking for remote code) is refused unless ``trust_code`` is true, and the error names
    the file that would have run, before anything is imported.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("source"), str):
        raise ArtifactError(f"{origin} has no model spec")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ArtifactError(f"{origin}: the spec's kwargs are not a JSON object")
    code = code_to_run(spec)
    if code is not None and not trust_code:
        raise UntrustedCodeError(
            f"{origin} would import and run {code} to rebuild the model ({spec['source']}); "
            "nothing was run. If you trust that file, pass trust_code=True "
            "(command line: --trust-code)"
        )
    return build_model(spec["source"], **kwargs)


def _build_zoo(name: str, **kwargs: Any) -> nn.Module:
    from netslim.models.zoo import get_zoo_model

    return get_zoo_model(name, **kwargs)


def _build_torchvision(name: str, **kwargs: Any) -> nn.Module:
    try:
        import torchvision
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedModelError(
            "torchvision is not installed: pip install netslim[vision]"
        ) from exc
    names = set(torchvision.models.list_models())
    if name not in names:
        raise ConfigError(
            f"unknown torchvision model {name!r} (see torchvision.models.list_models())"
        )
    kwargs.setdefault("weights", None)
    return torchvision.models.get_model(name, **kwargs)


def _build_timm(name: str, **kwargs: Any) -> nn.Module:
    try:
        import timm
    except ImportError as exc:  # pragma: no cover
        raise UnsupportedModelError("timm is not installed: pip install netslim[vision]") from exc
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r} (see timm.list_models())")
    kwargs.setdefault("pretrained", False)
    return timm.create_model(name, **kwargs)


def _build_hf(path: str, **kwargs: Any) -> nn.Module:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover
        raise UnsupportedModelError(
            "transformers is not installed: pip install netslim[hf]"
        ) from exc
    _check_hf_dir(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kwargs["trust_remote_code"] = False  # code in the model directory never runs (build_model)
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)
    archs = getattr(config, "architectures", None) or []
    for arch in archs:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls.from_pretrained(path, **kwargs)
    return transformers.AutoModel.from_pretrained(path, **kwargs)


def _build_ultralytics(name: str, **kwargs: Any) -> nn.Module:
    """``ultralytics.YOLO(NAME.yaml).model``: the architecture only. A ``.pt`` name would make
    ultralytics download weights, so only yaml files are accepted, and it runs offline."""
    if not name.endswith((".yaml", ".yml")):
        raise ConfigError(
            f"ultralytics:{name}: give an architecture yaml (e.g. ultralytics:yolov8n.yaml); "
            "netslim never downloads weights"
        )
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics import YOLO
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedModelError(
            "ultralytics is not installed: pip install ultralytics"
        ) from exc
    try:
        return YOLO(name, **kwargs).model
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"ultralytics:{name}: {exc}") from exc


def _py_target(target: str) -> tuple[Path, str]:
    """``FILE.py:FACTORY`` -> the file (which must exist) and the factory's name."""
    file, sep, factory = target.rpartition(":")
    if not sep or not file.endswith(".py"):
        raise ConfigError(f"py spec must be py:FILE.py:FACTORY, got py:{target}")
    if not Path(file).is_file():
        raise ConfigError(f"py spec: file {file!r} does not exist")
    return Path(file), factory


def check_spec(source: str) -> None:
    """What can be said of a spec without building it (nothing imported, nothing run): its
    scheme, and that a ``py:`` file or an ``hf:`` directory is there. Jobs call it first, so a
    typo in the model is the error a user sees, not one about what follows from it."""
    scheme, rest = parse_spec(source)
    if scheme == "py":
        _py_target(rest)
    elif scheme == "hf":
        _check_hf_dir(rest)


def _check_hf_dir(path: str) -> None:
    if not Path(path, "config.json").is_file():
        raise ConfigError(f"hf:{path} is not a local Hugging Face model directory (no config.json)")


def _build_py(target: str, **kwargs: Any) -> nn.Module:
    path, factory = _py_target(target)
    file = str(path)
    spec = importlib.util.spec_from_file_location(f"netslim_user_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ConfigError(f"py spec: {file} has no callable {factory!r}")
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"py spec: {factory}() returned {type(model).__name__}, not an nn.Module")
    return model


_BUILDERS = {
    "zoo": _build_zoo,
    "torchvision": _build_torchvision,
    "timm": _build_timm,
    "hf": _build_hf,
    "ultralytics": _build_ultralytics,
    "py": _build_py,
}


def default_example_shape(model: nn.Module) -> tuple[int, ...]:
    """A plausible input shape for the model's spec (override with --example-shape)."""
    spec = get_spec(model) or {}
    scheme = str(spec.get("source", "zoo:")).partition(":")[0]
    if scheme == "zoo":
        return (1, 1, 28, 28)
    if scheme == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return (1, *cfg.get("input_size", (3, 224, 224)))
    if scheme == "hf":
        cfg = getattr(model, "config", None)
        if cfg is not None and getattr(cfg, "vocab_size", None):
            return (1, 16)
        size = getattr(cfg, "image_size", 224)
        channels = getattr(cfg, "num_channels", 3)
        return (1, channels, size, size)
    if scheme == "ultralytics":
        return (1, 3, 640, 640)  # ultralytics' default image size
    return (1, 3, 224, 224)


def make_example_inputs(model: nn.Module, shape: tuple[int, ...] | None = None) -> tuple[Any, ...]:
    """Example inputs as a tuple: token ids (batch, length) for language models and for models
    whose first layer is an embedding, a float batch otherwise."""
    shape = tuple(shape) if shape else default_example_shape(model)
    generator = torch.Generator().manual_seed(0)
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", None) if cfg is not None else None
    if len(shape) == 2 and (vocab or (vocab := _first_layer_vocab(model))):
        return (torch.randint(0, int(vocab), shape, generator=generator),)
    return (torch.randn(shape, generator=generator),)


def _first_layer_vocab(model: nn.Module) -> int | None:
    """Rows of the embedding a model starts with (the first module, in definition order, that
    holds parameters): a text model's own ``nn.Embedding``/``nn.EmbeddingBag`` reads ids."""
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return module.num_embeddings
        if next(module.parameters(recurse=False), None) is not None:
            return None
    return None


def data_kwargs(source: str, info: Any) -> dict[str, int]:
    """Build arguments that fit a zoo model to the data (``info``: a ``netslim.data.DataInfo``):
    its class count and image channels, when they differ from the zoo's 10 and 1. Other specs
    keep their own head: labels below its size train as they are."""
    if parse_spec(source)[0] != "zoo" or len(info.input_shape) != 3:
        return {}
    kwargs = {}
    if info.num_classes != 10:
        kwargs["num_classes"] = int(info.num_classes)
    if info.input_shape[0] != 1:
        kwargs["in_channels"] = int(info.input_shape[0])
    return kwargs
