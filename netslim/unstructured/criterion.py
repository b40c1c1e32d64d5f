"""The unstructured criterion interface and its registry (``criterion=name``): kept apart from
the built-in criteria so that the modules defining criteria import only this one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn


class Criterion:
    """Base class. ``seed`` is given to every criterion so stochastic ones are reproducible.
    Data-driven criteria set ``needs_data`` and collect statistics in ``prepare``."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def prepare(self, model: nn.Module, calibration: Any) -> None:
        """Collect statistics from ``model`` and a :class:`netslim.importance.Calibration`."""

    def scores(
        self, weight: Tensor, *, module: nn.Module | None = None, name: str | None = None
    ) -> Tensor:
        """Scores shaped like ``weight``. ``name`` is the full key, e.g. ``"features.0.weight"``."""
        raise NotImplementedError


C = TypeVar("C", bound=type[Criterion])
_CRITERIA: dict[str, type[Criterion]] = {}


def register_criterion(name: str) -> Callable[[C], C]:
    """Class decorator making a :class:`Criterion` available as ``criterion=name``."""

    def wrap(cls: C) -> C:
        cls.name = name
        _CRITERIA[name] = cls
        return cls

    return wrap
