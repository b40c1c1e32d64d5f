"""Per-weight one-shot methods: ``name -> fn(W, stats, config) -> pruned W``.

Each method sees one linear layer at a time as an ``(out, in)`` float32 matrix plus the
statistics of its calibration inputs, and returns the pruned (and possibly updated) matrix.
``register_llm_method`` adds a method, selectable as ``LLMPrune(method=name)``.
"""

from __future__ import annotations

from netslim.core.config import choice
from netslim.llm.methods import magnitude, sparsegpt, wanda  # noqa: F401  (built-ins register)
from netslim.llm.methods.registry import _METHODS, WeightMethod, register_llm_method

__all__ = ["WeightMethod", "get_method", "register_llm_method"]


def get_method(name: str) -> tuple[WeightMethod, frozenset[str]]:
    choice("LLM weight method", name, sorted(_METHODS))
    return _METHODS[name]
