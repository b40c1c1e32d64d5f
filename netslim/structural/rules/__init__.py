"""Per-op channel rules: how each aten op relates the atoms of its inputs and outputs.

A rule is ``rule(ctx: OpContext) -> None``; it reads ``ctx.arg(name)``/``ctx.dims(t)`` and
calls ``ctx.out(t, atoms)`` for each output tensor, using ``ctx.unify``/``ctx.refine``/``ctx.new``.
Ops without a rule are *boundaries*: every free atom they touch is locked and reported, so an
unknown op can only make pruning more conservative, never wrong. Users extend the set with
:func:`register_rule` (keyed by the aten op name without overload, e.g. ``"my_ns::my_op"`` or
``"roll"``).

One module per family of ops (``trivial``, ``elementwise``, ``shape``, ``slicing``,
``contractions``, ``normalisation``, ``embedding``, ``spatial``, ``attention``), each
registering its rules when imported; ``context`` holds the registry and :class:`OpContext`,
``dispatch`` runs the rule of each traced op, ``modules`` the constraints of whole modules.
"""

from __future__ import annotations

# imported for their registrations
from netslim.structural.rules import (  # noqa: F401
    attention,
    contractions,
    elementwise,
    embedding,
    normalisation,
    shape,
    slicing,
    spatial,
    trivial,
)
from netslim.structural.rules.context import OpContext, Rule, register_rule
from netslim.structural.rules.dispatch import apply_rule
from netslim.structural.rules.modules import apply_module_rules, register_module_rule

__all__ = [
    "OpContext",
    "Rule",
    "apply_module_rules",
    "apply_rule",
    "register_module_rule",
    "register_rule",
]
