"""The rule interface: the registry of per-op rules and :class:`OpContext`, one op as a
rule sees it (bound arguments, outputs, the atom algebra's helpers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from netslim.core.registry import filed_under
from netslim.structural.graph import Boundary, Graph, flatten_tensors

Rule = Callable[["OpContext"], None]


RULES: dict[str, Rule] = {}


def register_rule(*names: str) -> Callable[[Rule], Rule]:
    """Decorator: ``@register_rule("my_ns::my_op") def rule(ctx): ...`` (see module doc)."""
    return filed_under(RULES, *names)


class OpContext:
    """One op as a rule sees it: bound arguments, outputs, and the algebra helpers."""

    def __init__(self, graph: Graph, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.g = graph
        self.func = func
        self.name = str(func.overloadpacket.__name__)
        self.args = args
        self.kwargs = kwargs
        self.result = out
        self.outputs = flatten_tensors(out)
        self.bound: dict[str, Any] = {}
        for i, a in enumerate(func._schema.arguments):
            if i < len(args):
                self.bound[a.name] = args[i]
            elif a.name in kwargs:
                self.bound[a.name] = kwargs[a.name]
            elif a.has_default_value():
                self.bound[a.name] = a.default_value
        self.kind = "op"
        self.info: dict[str, Any] = {}

    # -- reading -------------------------------------------------------------------------
    def arg(self, name: str, default: Any = None) -> Any:
        v = self.bound.get(name, default)
        return default if v is None else v

    def pos(self, i: int, default: Any = None) -> Any:
        return self.args[i] if i < len(self.args) else default

    def tensor_args(self) -> list[torch.Tensor]:
        return flatten_tensors((self.args, self.kwargs))

    def dims(self, t: torch.Tensor) -> list[int]:
        return self.g.dims(t)

    # -- algebra -------------------------------------------------------------------------
    def new(self, size: int, lock: str | None = None) -> int:
        return self.g.atoms.new(size, lock)

    def unify(self, a: int, b: int) -> None:
        self.g.atoms.unify(a, b)

    def refine(self, a: int, kind: str, parts: list[int]) -> None:
        self.g.atoms.refine(a, kind, parts)

    def lock(self, atoms: list[int], reason: str, report: bool = True) -> None:
        """Keep these atoms whole; report it when a still-free atom was affected."""
        if self.g.lock_all(atoms, reason) and report:
            self.g.boundaries.append(Boundary(self.name, self.g.module, reason))

    def out(self, t: torch.Tensor, atoms: list[int]) -> None:
        self.g.set_out(t, atoms)

    def out_view(self, t: torch.Tensor, atoms: list[int]) -> None:
        """The output of a view op: for the in-place ones (``transpose_``, ``t_``: the output
        is the input object, its dims reordered) the new layout replaces the input's."""
        if self.name.endswith("_") and self.g.has(t):
            self.g.layouts[id(t)] = (t, list(atoms))
        else:
            self.g.set_out(t, atoms)

    def out_like(self, t: torch.Tensor, lock: str) -> None:
        self.g.set_out(t, [self.new(s, lock) for s in t.shape])


def norm_dim(d: int, n: int) -> int:
    return d + n if d < 0 else d


def is_number(graph: Graph, t: torch.Tensor) -> bool:
    """A scalar made from Python numbers: a wrapped number, or computed from such only."""
    if id(t) in graph.constants:
        return graph.constants[id(t)] is t
    return t.dim() == 0 and not graph.has(t) and not graph.is_state(t)
