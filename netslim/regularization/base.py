"""A penalty is a callable ``penalty(model) -> scalar Tensor`` with a strength ``lam``.

Subclasses (L1 on weights here; BN-gamma L1 and group lasso later) implement ``_value``; the base
validates ``lam`` and picks the modules to act on, so every penalty accepts the same arguments.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from netslim.core.batches import device_of
from netslim.core.names import check_module_names
from netslim.errors import ConfigError
from netslim.unstructured.targets import PRUNABLE


class Penalty:
    """``modules``: module names or module objects to penalise; ``None`` = every module of the
    types in ``default_types`` (subclasses choose; Linear and Conv by default)."""

    default_types: tuple[type[nn.Module], ...] = PRUNABLE

    def __init__(self, lam: float, modules: Iterable[str | nn.Module] | None = None):
        if (
            isinstance(lam, bool)
            or not isinstance(lam, numbers.Real)
            or not math.isfinite(lam)
            or lam < 0
        ):
            raise ConfigError(f"penalty strength lam must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)
        self.modules = None if modules is None else list(modules)

    def selected(self, model: nn.Module) -> list[nn.Module]:
        if self.modules is None:
            return [m for m in model.modules() if isinstance(m, self.default_types)]
        names = [m for m in self.modules if isinstance(m, str)]
        check_module_names(model, names, "modules")
        return [model.get_submodule(m) if isinstance(m, str) else m for m in self.modules]

    def _value(self, modules: list[nn.Module]) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module) -> Tensor:
        modules = self.selected(model)
        if self.lam == 0 or not modules:
            return torch.zeros((), device=device_of(model))
        return self.lam * self._value(modules)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lam={self.lam})"
