"""Per-weight one-shot methods: ``name -> fn(W, stats, config) -> pruned W``.

Each method sees one linear layer at a time as an ``(out, in)`` float32 matrix plus the
statistics of its calibration inputs, and returns the pruned (and possibly updated) matrix.
``register_llm_method`` adds a method, selectable as ``LLMPrune(method=name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor

from netslim.errors import ConfigError

if TYPE_CHECKING:
    from netslim.llm.calibration import LayerStats
    from netslim.llm.config import LLMPrune

WeightMethod = Callable[[Tensor, "LayerStats | None", "LLMPrune"], Tensor]
_METHODS: dict[str, tuple[WeightMethod, frozenset[str]]] = {}


def register_llm_method(name: str, needs: set[str]) -> Callable[[WeightMethod], WeightMethod]:
    """Decorator; ``needs`` ⊆ {"sq", "gram"} says which input statistics to collect."""

    def wrap(fn: WeightMethod) -> WeightMethod:
        _METHODS[name] = (fn, frozenset(needs))
        return fn

    return wrap


def get_method(name: str) -> tuple[WeightMethod, frozenset[str]]:
    _load_builtin()
    if name not in _METHODS:
        raise ConfigError(
            f"unknown LLM weight method {name!r}: choose one of {', '.join(sorted(_METHODS))}"
        )
    return _METHODS[name]


def _load_builtin() -> None:
    from netslim.llm.methods import magnitude, sparsegpt, wanda  # noqa: F401
