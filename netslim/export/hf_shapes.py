"""``save_pretrained`` / ``from_pretrained`` for pruned Hugging Face models whose config cannot
express the new shapes (BERT-style heads, per-layer FFN widths).

A Hugging Face config holds one size per kind of layer and derives the head size from
``hidden_size / num_attention_heads``, so a BERT with heads removed, or with FFN widths that
differ per layer, cannot be described by its own config (:mod:`netslim.export.hf` saves the
models that can). Here the saved config is a subclass, model type ``netslim_<type>``, that
carries the difference to the stock architecture: ``netslim_shapes`` (tensor name -> shape) and
``netslim_attrs`` (module name -> the plain attributes that changed, e.g. ``num_attention_heads``,
``all_head_size``, ``out_features``). Its model classes (``Netslim<Class>``) build the stock
model and then resize those tensors and attributes, before the weights are loaded, so the stock
``AutoModelFor*.from_pretrained(directory)`` returns the pruned model, with no remote code.

The ``netslim_<type>`` configs are registered with ``AutoConfig`` for :data:`FAMILIES` when this
module is imported (and for any family saved in this process); the model classes are registered
when such a config is first read, so the import stays light. Other families:
``register_family(model_type)`` before loading.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netslim.errors import UnsupportedModelError

PREFIX = "netslim_"
FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "vit", "llama", "qwen2")
_CONFIGS: dict[str, type] = {}
_MODELS_DONE: set[str] = set()
_PLAIN = (int, float, bool)


def _auto_classes() -> list[Any]:
    import transformers

    return [
        getattr(transformers, name)
        for name in dir(transformers)
        if name == "AutoModel" or name.startswith("AutoModelFor")
    ]


def register_family(model_type: str) -> type:
    """The ``netslim_<model_type>`` config class, registered with ``AutoConfig`` (idempotent)."""
    if model_type in _CONFIGS:
        return _CONFIGS[model_type]
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        base = CONFIG_MAPPING[model_type]
    except KeyError:
        raise UnsupportedModelError(f"transformers has no model type {model_type!r}") from None

    def __init__(self, netslim_shapes=None, netslim_attrs=None, **kwargs):  # noqa: N807
        kwargs.pop("model_type", None)
        base.__init__(self, **kwargs)
        self.netslim_shapes = dict(netslim_shapes or {})
        self.netslim_attrs = dict(netslim_attrs or {})
        _register_models(model_type)  # AutoModelFor* looks the model class up right after this

    name = f"Netslim{base.__name__}"
    config_cls = type(name, (base,), {"model_type": PREFIX + model_type, "__init__": __init__})
    AutoConfig.register(PREFIX + model_type, config_cls, exist_ok=True)
    _CONFIGS[model_type] = config_cls
    return config_cls


def _register_models(model_type: str) -> None:
    """``Netslim<Class>`` for every Auto class that maps the family's stock config."""
    if model_type in _MODELS_DONE:
        return
    _MODELS_DONE.add(model_type)
    config_cls = _CONFIGS[model_type]
    base_config = config_cls.__mro__[1]
    for auto in _auto_classes():
        mapping = getattr(auto, "_model_mapping", None)
        try:
            stock = mapping[base_config] if mapping is not None else None
        except (KeyError, ImportError, AttributeError):
            continue
        if not isinstance(stock, type):
            continue
        auto.register(config_cls, pruned_class(stock, config_cls), exist_ok=True)


_CLASSES: dict[type, type] = {}


def pruned_class(stock: type, config_cls: type) -> type:
    """``Netslim<stock>``: builds ``stock`` from the config, then resizes as it records."""
    if stock in _CLASSES:
        return _CLASSES[stock]

    def __init__(self, config, *args, **kwargs):  # noqa: N807
        stock.__init__(self, config, *args, **kwargs)
        apply_shapes(self, config)

    cls = type(
        f"Netslim{stock.__name__}", (stock,), {"config_class": config_cls, "__init__": __init__}
    )
    _CLASSES[stock] = cls
    return cls


def _simple(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, _PLAIN) for v in value)


def _differences(model: nn.Module, config: Any) -> tuple[dict, dict]:
    """Tensor shapes and plain attributes where ``model`` differs from ``config``'s build."""
    with torch.device("meta"):
        fresh = type(model)(config)
    fresh_tensors = dict(fresh.state_dict(keep_vars=True))
    shapes = {
        name: list(tensor.shape)
        for name, tensor in model.state_dict(keep_vars=True).items()
        if name in fresh_tensors and tuple(fresh_tensors[name].shape) != tuple(tensor.shape)
    }
    missing = sorted(set(model.state_dict()) ^ set(fresh_tensors))
    if missing:
        raise UnsupportedModelError(
            f"{type(model).__name__} has tensors its config does not build (or lacks some): "
            f"{missing[:4]}"
        )
    fresh_modules = dict(fresh.named_modules())
    attrs: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        before = fresh_modules.get(name)
        if before is None:
            continue
        changed = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in vars(module).items()
            if not key.startswith("_")
            and key != "training"
            and _simple(value)
            and key in vars(before)
            and vars(before)[key] != value
        }
        if changed:
            attrs[name] = changed
    return shapes, attrs


def apply_shapes(model: nn.Module, config: Any) -> None:
    """Resize ``model`` (just built from ``config``) to the recorded shapes and attributes."""
    for name, shape in (getattr(config, "netslim_shapes", None) or {}).items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        old = getattr(owner, attr)
        new = torch.empty(tuple(shape), dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            owner._buffers[attr] = new
    for name, values in (getattr(config, "netslim_attrs", None) or {}).items():
        module = model.get_submodule(name)
        for key, value in values.items():
            was = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(was, tuple) else value)


def shaped_config(model: nn.Module) -> Any:
    """A ``netslim_<type>`` copy of ``model.config`` that records how ``model`` differs."""
    config = model.config
    model_type = config.model_type.removeprefix(PREFIX)
    stock_config = config.__class__.__mro__[1] if config.model_type.startswith(PREFIX) else None
    plain = copy.deepcopy(config)
    if stock_config is not None:  # re-saving a reloaded model: diff against the stock build
        values = plain.to_dict()
        values.pop("model_type", None)
        values.pop("netslim_shapes", None)
        values.pop("netslim_attrs", None)
        plain = stock_config(**values)
    _restore_stock_heads(model, plain)
    shapes, attrs = _differences(model, plain)
    config_cls = register_family(model_type)
    values = plain.to_dict()
    values.pop("model_type", None)
    return config_cls(netslim_shapes=shapes, netslim_attrs=attrs, **values)


def _restore_stock_heads(model: nn.Module, config: Any) -> None:
    """The structural engine writes a uniform new head count into ``config``; a BERT-style
    config then derives a wrong head size (or cannot build at all), so the stock count
    ``hidden_size / head size`` is put back and the per-layer heads go to ``netslim_attrs``."""
    hidden = getattr(config, "hidden_size", None)
    size = next(
        (m.attention_head_size for m in model.modules() if hasattr(m, "attention_head_size")),
        None,
    )
    if hidden and size and hasattr(config, "num_attention_heads") and hidden % size == 0:
        config.num_attention_heads = hidden // size


def save_pretrained_shaped(model: nn.Module, directory: str | os.PathLike) -> dict[str, Any]:
    """``model.save_pretrained(directory)`` with a config that records the pruned shapes; the
    stock ``AutoModelFor*.from_pretrained(directory)`` reloads it once this module is imported.
    Returns the recorded differences."""
    config = shaped_config(model)
    original = model.config
    try:
        model.config = config
        model.save_pretrained(Path(directory))
    finally:
        model.config = original
    return {
        "load": f"model type {config.model_type}: import netslim.export.hf_shapes, then "
        "AutoModelFor*.from_pretrained(directory) as usual (no remote code runs)",
        "netslim_shapes": config.netslim_shapes,
        "netslim_attrs": config.netslim_attrs,
    }


def _register_known() -> None:
    for family in FAMILIES:
        try:
            register_family(family)
        except UnsupportedModelError:
            continue


_register_known()
