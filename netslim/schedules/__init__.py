"""Pruning schedules: one-shot, iterative and AGP, as pure sparsity curves plus drivers that
take the caller's training callbacks."""

from netslim.schedules.agp import AGPScheduler, agp_sparsity
from netslim.schedules.drivers import run_agp, run_iterative, run_oneshot
from netslim.schedules.iterative import iterative_ratios

__all__ = [
    "AGPScheduler",
    "agp_sparsity",
    "iterative_ratios",
    "run_agp",
    "run_iterative",
    "run_oneshot",
]
