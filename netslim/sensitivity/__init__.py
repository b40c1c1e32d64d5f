"""Sensitivity analysis: prune each channel group alone at 10…90 %, measure accuracy, and propose
per-module ratios for a MACs target (a ``Channels(per_module=...)`` allocation). Also a CPU
latency target, searched by measuring."""

from netslim.sensitivity.latency import prune_to_latency
from netslim.sensitivity.propose import propose_ratios
from netslim.sensitivity.scan import DEFAULT_RATIOS, scan_sensitivity

__all__ = ["DEFAULT_RATIOS", "prune_to_latency", "propose_ratios", "scan_sensitivity"]
