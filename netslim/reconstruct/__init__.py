"""Layer-wise reconstruction after pruning (no labels): least-squares refits of channel-pruned
consumers (ThiNet, He et al. 2017), optimal-brain-surgeon updates of masked weights (OBC /
SparseGPT), BatchNorm re-estimation. The linear algebra in ``linalg`` is shared with the LLM
methods (SparseGPT)."""

from netslim.reconstruct.driver import calibration_batches, reconstruct
from netslim.reconstruct.layers import reestimate_bn, refit_layer, supported
from netslim.reconstruct.linalg import inverse_cholesky, masked_solve, ridge_solve

__all__ = [
    "calibration_batches",
    "inverse_cholesky",
    "masked_solve",
    "reconstruct",
    "reestimate_bn",
    "refit_layer",
    "ridge_solve",
    "supported",
]
