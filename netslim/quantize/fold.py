"""A deployable copy of a model: a deep copy with every netslim mask folded into its weight.

``copy.deepcopy`` keeps parametrized modules on the *same* dynamically created class, and
``parametrize.remove_parametrizations`` deletes the weight property from that class, so folding
the copy would break the original. Each parametrized module of the copy gets its own class first.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import parametrize


def folded_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """``(copy with masks made permanent, folded keys)``; ``model`` itself is not changed."""
    from netslim.unstructured.masks import make_permanent

    work = copy.deepcopy(model)
    for module in work.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return work, make_permanent(work)
