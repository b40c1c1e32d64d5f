"""Running a model once for measurement: eval mode, no autograd, any input layout."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def call(model: nn.Module, example_inputs: Any) -> Any:
    """``model(x)``, ``model(*tuple)`` or ``model(**dict)`` depending on the inputs' type."""
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``no_grad`` for the block; each module's own training flag is restored."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag
