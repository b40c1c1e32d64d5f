"""Layer-wise reconstruction after pruning (no labels): least-squares refits of channel-pruned
consumers (ThiNet, He et al. 2017), optimal-brain-surgeon updates of masked weights (OBC /
SparseGPT), BatchNorm re-estimation. ``policy`` decides when pruning reconstructs by default
(one rule for the CLI and the API). The linear algebra in ``linalg`` is shared with the LLM
methods (SparseGPT)."""

from netslim.reconstruct.driver import calibration_batches, reconstruct
from netslim.reconstruct.layers import reestimate_bn, refit_layer, supported
from netslim.reconstruct.linalg import inverse_cholesky, masked_solve, ridge_solve
from netslim.reconstruct.policy import auto_reconstruct, check_requested

__all__ = [
    "auto_reconstruct",
    "calibration_batches",
    "check_requested",
    "inverse_cholesky",
    "masked_solve",
    "reconstruct",
    "reestimate_bn",
    "refit_layer",
    "ridge_solve",
    "supported",
]
