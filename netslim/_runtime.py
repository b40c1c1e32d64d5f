"""Process-level scopes for the engine's hot phases.

- ``one_thread``: phases made of many small tensor ops (mask selection, per-group scoring,
  SparseGPT's column loop). Extra threads only add synchronisation there, and on a busy machine
  every op can stall on a descheduled worker (measured 10x slower with 2 threads under load).
- ``paused_gc``: phases that build many short-lived Python objects (the traced graph). A full
  collection walks every object of a torch process, 0.2-0.4 s, and the allocation rate of a
  trace triggers one or more per prune. The engine's objects are freed by reference counting
  when it returns, so pausing the collector skips that work rather than postponing it (the
  same reason ``timeit`` runs with the collector off).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread; the previous setting is always restored."""
    old = torch.get_num_threads()
    if old == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Run the block with automatic garbage collection off (restored as it was)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
