"""A one-thread scope for phases made of many small tensor ops (mask selection, SparseGPT's
column loop): extra threads only add synchronisation there, and on a busy machine every op can
stall on a descheduled worker (measured 10x slower with 2 threads under load)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
