"""Unstructured pruning: per-weight masks as parametrizations, criteria, global/layer/N:M
allocation and ``torch.nn.utils.prune`` interop. Importing it registers the ``Unstructured``
handler with ``netslim.prune_``.
"""

from netslim.core.masks import (
    WeightMask,
    attach_mask,
    detach_mask,
    get_mask,
    iter_masks,
    make_permanent,
    sparsity_report,
)
from netslim.unstructured.allocation import compute_masks
from netslim.unstructured.config import Unstructured
from netslim.unstructured.criteria import available_criteria, get_criterion
from netslim.unstructured.criterion import Criterion, register_criterion
from netslim.unstructured.interop import from_torch_prune, to_torch_prune
from netslim.unstructured.method import apply_masks, prune, replay_masks
from netslim.unstructured.nm import check_nm, nm_mask

__all__ = [
    "Criterion",
    "Unstructured",
    "WeightMask",
    "apply_masks",
    "attach_mask",
    "available_criteria",
    "check_nm",
    "compute_masks",
    "detach_mask",
    "from_torch_prune",
    "get_criterion",
    "get_mask",
    "iter_masks",
    "make_permanent",
    "nm_mask",
    "prune",
    "register_criterion",
    "replay_masks",
    "sparsity_report",
    "to_torch_prune",
]
