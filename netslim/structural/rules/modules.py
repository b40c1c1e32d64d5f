"""Module-level constraints: what a module's own code imposes beyond its ops (run after
the trace)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from netslim.core.registry import filed_under
from netslim.structural.atoms import AlgebraConflict
from netslim.structural.graph import Boundary, Graph

ModuleRule = Callable[[Graph, str, torch.nn.Module], None]


_MODULE_RULES: dict[type, ModuleRule] = {}


def register_module_rule(*types: type) -> Callable[[ModuleRule], ModuleRule]:
    """Extension point: extra constraints a module's own code imposes (run after the trace)."""
    return filed_under(_MODULE_RULES, *types)


def apply_module_rules(graph: Graph) -> None:
    for where, mod in graph.model.named_modules():
        rule = next((_MODULE_RULES[c] for c in type(mod).__mro__ if c in _MODULE_RULES), None)
        if rule is None:
            continue
        try:
            rule(graph, where, mod)
        except (AlgebraConflict, KeyError, ValueError) as exc:
            atoms = [a for n, p in mod.named_parameters() for a in _layout_of(graph, p)]
            if graph.lock_all(atoms, f"{type(mod).__name__}: {exc}"):
                graph.boundaries.append(Boundary(type(mod).__name__, where, str(exc)))


def _layout_of(graph: Graph, t: torch.Tensor) -> list[int]:
    hit = graph.layouts.get(id(t))
    return hit[1] if hit is not None and hit[0] is t else []


@register_module_rule(torch.nn.MultiheadAttention)
def _mha(graph: Graph, where: str, mod: torch.nn.Module) -> None:
    """``F.multi_head_attention_forward`` derives head_dim from the *query's* width, so the
    query's, inner and output widths must shrink together: tie them to one index space. Keys
    and values of their own widths (``kdim``/``vdim``) only feed their projections."""
    out_w = _layout_of(graph, mod.out_proj.weight)
    if not out_w:
        return
    if mod._qkv_same_embed_dim:
        ins = [_layout_of(graph, mod.in_proj_weight)]
    else:
        ins = [_layout_of(graph, mod.q_proj_weight)]
    for lay in ins:
        if not lay:
            raise ValueError("projection weights not traced")
        graph.atoms.unify(lay[1], out_w[1])
    graph.atoms.unify(out_w[0], out_w[1])
