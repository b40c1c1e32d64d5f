"""Sparsity-inducing penalties added to the training loss: ``loss + penalty(model)``."""

from netslim.regularization.base import Penalty
from netslim.regularization.l1 import L1Penalty

__all__ = ["L1Penalty", "Penalty"]
