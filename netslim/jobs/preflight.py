"""Checks made before any work: an output folder that cannot be made, settings that need data,
example inputs or data that do not fit the model are one clear line (exit 2 on the command
line), before anything trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from netslim.errors import ConfigError
from netslim.jobs.settings import JobSettings, build_config


def check_training_settings(settings: JobSettings) -> None:
    """Settings that only act through training need data (``settings.data`` resolved: None is
    no data); without it they would be silently ignored."""
    if settings.data is not None:
        return
    for flag, given in (("--distill", settings.distill), ("--l1-reg", settings.l1_reg > 0)):
        if given:
            raise ConfigError(f"{flag} acts during training, and without --data nothing trains")


def check_out(out: str, flag: str = "--out") -> None:
    """The output directory must be creatable: checked before any work."""
    path = Path(out)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {out}: {parent} exists and is not a directory")
            break


def _forward(model: nn.Module, inputs: tuple) -> tuple[Any, str | None]:
    """``(output, None)`` of an inference forward of ``inputs``, or ``(None, the first line of
    what it raised)``."""
    from netslim.measure._call import inference

    try:
        with inference(model):
            return model(*inputs), None
    except Exception as exc:  # any failure of the user's model on these inputs
        text = str(exc).strip().splitlines()
        return None, text[0] if text else type(exc).__name__


def check_example_fits(
    model: nn.Module, example_inputs: tuple, spec: str, flag: str = "--example-shape"
) -> None:
    """One forward of the example inputs: a shape that does not fit is one line naming
    ``flag``, before any training."""
    _, error = _forward(model, example_inputs)
    if error is not None:
        shape = ",".join(str(d) for d in example_inputs[0].shape)
        raise ConfigError(
            f"the example input {shape} does not fit {spec} ({error}): "
            f"give {flag} matching the model's input"
        )


def check_inputs(
    model: nn.Module, example_inputs: tuple, settings: JobSettings, loader: Any
) -> None:
    """One forward on the example inputs (and on one sample of the data): a shape that does not
    fit is one line naming the flag, before any training; then the method's own checks of its
    settings against the model (``netslim.methods.preflight``: module names, block counts,
    N:M fit)."""
    from netslim.methods import preflight

    check_example_fits(model, example_inputs, settings.model)
    preflight(settings.method, model, build_config(settings), example_inputs)
    if loader is not None and not isinstance(loader.dataset[0][0], torch.Tensor):
        return
    if loader is not None:
        sample = loader.dataset[0][0].unsqueeze(0)
        output, error = _forward(model, (sample,))
        if error is not None:
            shape = ",".join(str(d) for d in sample.shape)
            raise ConfigError(
                f"--data {settings.data} gives inputs of shape {shape}, which do not fit "
                f"{settings.model} ({error}): give --data that fits the model"
            )
        _check_classifier(output, settings, loader)


def _check_classifier(output: Any, settings: JobSettings, loader: Any) -> None:
    """With data, netslim trains with cross-entropy and scores accuracy: the model's output on
    a sample must hold logits, one per class of the data (a detection model's dict does not)."""
    from netslim.data import loader_info
    from netslim.training import logits_of

    try:
        logits = logits_of(output)
    except ConfigError as exc:
        raise ConfigError(f"--data {settings.data}: {settings.model}: {exc}") from None
    info = loader_info(loader)
    if info is not None and logits.shape[-1] < info.num_classes:
        raise ConfigError(
            f"--data {settings.data} has {info.num_classes} classes, and {settings.model} gives "
            f"{logits.shape[-1]} logits: give a model with a head for them"
        )
