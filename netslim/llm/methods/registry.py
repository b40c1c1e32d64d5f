"""The per-weight LLM method registry (``name -> fn, needed statistics``), apart from the
built-in methods so that each of them imports only this module."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor

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
