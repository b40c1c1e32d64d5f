"""The model and its data, read the same way by every job that trains or measures one
(``prune``, ``run``, ``lottery``, ``sensitivity``): a zoo model sized for the data's classes and
channels, loaders that follow the model's preprocessing (and tokenizer), and the example shape
one sample of the data implies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netslim.errors import ConfigError


@dataclass
class DataSettings:
    """What :func:`model_and_data` reads. A prune job's and a recipe's settings have the same
    field names and are passed as they are."""

    model: str
    data: str | None
    batch_size: int = 128
    limit_train: int | None = None
    limit_test: int | None = None
    seed: int = 0
    val_split: float | None = None
    image_column: str | None = None
    text_column: str | None = None
    label_column: str | None = None


DATA_OPTIONS = ("val_split", "image_column", "text_column", "label_column")


def data_options(settings: Any) -> Any:
    """The data source's options (``--val-split``, the ``hf:`` column names) of ``settings``:
    a settings object, or a report's settings dict (older reports may lack some)."""
    from netslim.data import DataOptions

    if isinstance(settings, dict):
        return DataOptions(**{k: settings.get(k) for k in DATA_OPTIONS})
    return DataOptions(**{k: getattr(settings, k) for k in DATA_OPTIONS})


def model_and_data(settings: Any) -> tuple[nn.Module, Any, Any]:
    """``(model, train_loader, test_loader)``; the loaders are None without data."""
    from netslim.data import dataset_info, make_loaders
    from netslim.data.datasets import data_kind
    from netslim.models.spec import build_model, data_kwargs

    check_data_flags(settings, data_kind(settings.data) if settings.data else "none")
    if not settings.data:
        return build_model(settings.model), None, None
    options = data_options(settings)
    kwargs = {}
    if data_kind(settings.data) in ("folder", "hf"):
        kwargs = data_kwargs(settings.model, dataset_info(settings.data, options=options))
    model = build_model(settings.model, **kwargs)
    train_loader, test_loader = make_loaders(
        settings.data,
        batch_size=settings.batch_size,
        limit_train=settings.limit_train,
        limit_test=settings.limit_test,
        seed=settings.seed,
        model=model,
        options=options,
    )
    check_data_fits(model, train_loader, settings.data, settings.model)
    return model, train_loader, test_loader


def forward_or_error(model: nn.Module, inputs: tuple) -> tuple[Any, str | None]:
    """``(output, None)`` of an inference forward of ``inputs``, or ``(None, the first line of
    what it raised)``."""
    from netslim.measure._call import inference

    try:
        with inference(model):
            return model(*inputs), None
    except Exception as exc:  # any failure of the user's model on these inputs
        text = str(exc).strip().splitlines()
        return None, text[0] if text else type(exc).__name__


def check_data_fits(model: nn.Module, loader: Any, data: str, spec: str) -> None:
    """One sample of the data through the model, before any training: inputs it cannot take
    (Fashion-MNIST's one channel for a three-channel torchvision model), or an output without
    a logit for each of the data's classes, are one line naming the data. Every job that reads
    data checks it here (before, only ``netslim prune`` did: ``sensitivity`` and ``run``
    failed with a traceback once training started, ``lottery`` too, and ``eval --data``)."""
    from netslim.data import loader_info
    from netslim.training import logits_of

    sample = loader.dataset[0][0]
    if not isinstance(sample, torch.Tensor):  # tokenized text: the tokenizer is the model's
        return
    sample = sample.unsqueeze(0)
    output, error = forward_or_error(model, (sample,))
    if error is not None:
        shape = ",".join(str(d) for d in sample.shape)
        raise ConfigError(
            f"--data {data} gives inputs of shape {shape}, which do not fit "
            f"{spec} ({error}): give --data that fits the model (image folders and "
            "hf: image sets are read at the model's channels and size)"
        )
    try:
        logits = logits_of(output)  # training uses cross-entropy, evaluation accuracy
    except ConfigError as exc:
        head = ""
        if hasattr(getattr(model, "config", None), "to_dict"):  # a Hugging Face base model
            head = (
                "; or give it a task head first, e.g. AutoModelForSequenceClassification"
                ".from_pretrained(DIR, num_labels=N).save_pretrained(OUT), and prune hf:OUT"
            )
        raise ConfigError(f"--data {data}: {spec}: {exc}{head}") from None
    info = loader_info(loader)
    if info is not None and logits.shape[-1] < info.num_classes:
        raise ConfigError(
            f"--data {data} has {info.num_classes} classes, and {spec} gives "
            f"{logits.shape[-1]} logits: give a model with a head for them"
        )


def check_data_flags(settings: Any, kind: str) -> None:
    """``--val-split`` reads folders and ``hf:`` sets, the column flags ``hf:`` sets only."""
    if settings.val_split is not None and kind not in ("folder", "hf"):
        raise ConfigError(
            f"--val-split applies to image folders and hf: data sets, not {settings.data or 'none'!r}"
        )
    for name in ("image_column", "text_column", "label_column"):
        if getattr(settings, name) is not None and kind != "hf":
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} applies to hf: data sets, not {settings.data or 'none'!r}")


def data_shape(loader: Any) -> list[int] | None:
    """The example shape the data implies: one sample of the training set."""
    if loader is None:
        return None
    sample = loader.dataset[0][0]
    return [1, *sample.shape] if isinstance(sample, torch.Tensor) else None
