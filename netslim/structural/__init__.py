"""Structural pruning: trace -> channel groups -> plan -> physical removal.

Public API::

    groups(model, example_inputs) -> list[Group]
    prune(model, example_inputs, Channels(...)) -> (PruningPlan, report)
    make_plan(model, example_inputs, Channels(...)) -> (PruningPlan, notes)
    apply_plan(model, plan, example_inputs) -> report
    masked_reference(model, plan, example_inputs) -> oracle module
    register_rule("aten_op_name")(rule)            # teach the tracer an op
    register_module_rule(ModuleType)(fn)           # constraints a module's own code imposes
    register_updater(ModuleType)(fn)               # teach apply a module's size attributes
    prune_and_compare(model, example_inputs, cfg)  # prune + max abs diff vs masked original
    compact_(model, example_inputs) -> report       # remove dead/constant channels, fold constants

Importing this package registers the ``Channels`` method with ``netslim.prune_``.
"""

from netslim.structural.attrs import register_updater
from netslim.structural.compact import compact_
from netslim.structural.config import Channels
from netslim.structural.engine import apply_plan, make_plan, prune
from netslim.structural.groups import Group, Member, analyze, groups
from netslim.structural.method import prune_channels
from netslim.structural.plan import PruningPlan
from netslim.structural.reference import masked_reference
from netslim.structural.rules import OpContext, register_module_rule, register_rule
from netslim.structural.verify import prune_and_compare

__all__ = [
    "Channels", "Group", "compact_", "Member", "OpContext", "PruningPlan", "analyze", "apply_plan",
    "groups", "make_plan", "masked_reference", "prune", "prune_and_compare", "prune_channels",
    "register_module_rule", "register_rule", "register_updater",
]  # fmt: skip
