"""Sparsity-inducing penalties added to the training loss: ``loss + penalty(model)``."""

from netslim.regularization.base import Penalty
from netslim.regularization.bn import BNScalePenalty
from netslim.regularization.group_lasso import GroupLassoPenalty
from netslim.regularization.l1 import L1Penalty

__all__ = ["BNScalePenalty", "GroupLassoPenalty", "L1Penalty", "Penalty"]
