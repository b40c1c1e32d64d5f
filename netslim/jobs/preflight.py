"""Checks made before any work: an output folder that cannot be made, settings that need data,
example inputs or data that do not fit the model are one clear line (exit 2 on the command
line), before anything trains.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from netslim.errors import ConfigError
from netslim.jobs.model_data import forward_or_error
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


def check_example_fits(
    model: nn.Module, example_inputs: tuple, spec: str, flag: str = "--example-shape"
) -> None:
    """One forward of the example inputs: a shape that does not fit is one line naming
    ``flag``, before any training."""
    _, error = forward_or_error(model, example_inputs)
    if error is not None:
        shape = ",".join(str(d) for d in example_inputs[0].shape)
        raise ConfigError(
            f"the example input {shape} does not fit {spec} ({error}): "
            f"give {flag} matching the model's input"
        )


def check_inputs(model: nn.Module, example_inputs: tuple, settings: JobSettings) -> None:
    """One forward on the example inputs (the data was checked when it was read:
    ``model_data.check_data_fits``): a shape that does not fit is one line naming the flag,
    before any training; then the method's own checks of its settings against the model
    (``netslim.methods.preflight``: module names, block counts, N:M fit)."""
    from netslim.methods import preflight

    check_example_fits(model, example_inputs, settings.model)
    preflight(settings.method, model, build_config(settings), example_inputs)
