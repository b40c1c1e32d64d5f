"""Sensitivity analysis: prune each channel group alone at 10…90 %, measure accuracy, and propose
per-module ratios for a MACs target (a ``Channels(per_module=...)`` allocation).
``prune_to_latency`` (a CPU latency target, searched by measuring) lives in
``netslim.structural.latency_search`` and is re-exported here for existing callers."""

from netslim.sensitivity.propose import propose_ratios
from netslim.sensitivity.scan import DEFAULT_RATIOS, scan_sensitivity
from netslim.structural.latency_search import prune_to_latency

__all__ = ["DEFAULT_RATIOS", "prune_to_latency", "propose_ratios", "scan_sensitivity"]
