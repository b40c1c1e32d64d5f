"""A CPU latency target for structural pruning (``Channels(target_latency_ms=...)``): search
the MACs fraction whose pruned model runs under the target, by measuring (latency is not linear
in MACs on real hardware). It drives the MACs allocation of ``allocation.py`` through the engine,
so it lives beside it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from netslim.core.copying import copy_model
from netslim.errors import ConfigError
from netslim.measure.latency import latency_ms
from netslim.structural.config import Channels
from netslim.structural.engine import prune
from netslim.structural.plan import PruningPlan


def prune_to_latency(
    model: nn.Module,
    example_inputs: Any,
    target_ms: float,
    config: Channels | None = None,
    **search: Any,
) -> dict[str, Any]:
    """Prune ``model`` in place to the largest MACs fraction (bisection over ``steps`` trials)
    whose median CPU latency is at most ``target_ms``; returns the engine's report plus the
    ``latency`` search trace. ConfigError if even the smallest trial is too slow. ``search``:
    the keyword arguments of :func:`search_latency`."""
    return search_latency(model, example_inputs, target_ms, config, **search)[1]


def search_latency(
    model: nn.Module,
    example_inputs: Any,
    target_ms: float,
    config: Channels | None = None,
    *,
    calibration: Any = None,
    steps: int = 6,
    threads: int = 1,
    repeats: int = 20,
) -> tuple[PruningPlan | None, dict[str, Any]]:
    """:func:`prune_to_latency` that also returns the applied plan (None: nothing pruned)."""
    if target_ms <= 0:
        raise ConfigError(f"target latency must be > 0 ms, got {target_ms}")
    if not isinstance(example_inputs, (tuple, dict)):
        example_inputs = (example_inputs,)
    config = replace(config or Channels(), target_latency_ms=None)

    def measure(m: nn.Module) -> float:
        return latency_ms(m, example_inputs, threads=threads, repeats=repeats).median

    trace = [{"macs_fraction": 1.0, "latency_ms": measure(model)}]
    if trace[0]["latency_ms"] <= target_ms:
        return None, {"latency": trace, "note": "already under the target: nothing pruned"}
    lo, hi, best = 0.02, 1.0, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        trial = copy_model(model)
        prune(trial, example_inputs, replace(config, target_macs=mid), calibration)
        ms = measure(trial)
        trace.append({"macs_fraction": mid, "latency_ms": ms})
        if ms <= target_ms:
            best, lo = mid, mid
        else:
            hi = mid
    if best is None:
        raise ConfigError(
            f"no MACs fraction down to {lo:.3f} reaches {target_ms} ms "
            f"(best {min(t['latency_ms'] for t in trace):.3f} ms)"
        )
    plan, report = prune(model, example_inputs, replace(config, target_macs=best), calibration)
    report["latency"] = trace
    report["latency_ms"] = measure(model)
    return plan, report
