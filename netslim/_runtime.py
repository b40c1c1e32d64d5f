"""Process-level scopes for the engine's hot phases.

- ``one_thread``: phases made of many small tensor ops (mask selection, per-group scoring,
  SparseGPT's column loop). Extra threads only add synchronisation there, and on a busy machine
  every op can stall on a descheduled worker (measured 10x slower with 2 threads under load).
- ``paused_gc``: phases that build many short-lived Python objects (the traced graph). A full
  collection walks every object of a torch process, 0.2-0.4 s, and the allocation rate of a
  trace triggers one or more per prune. The engine's objects are freed by reference counting
  when it returns, so pausing the collector skips that work rather than postponing it (the
  same reason ``timeit`` runs with the collector off).
- ``retain_freed_memory``: the process-wide allocator setting that eager CPU inference is timed
  and deployed under (opt-in; ``allocator`` names the one in effect).
- ``quiet_log``: a library's logger held at ERROR (advice and deprecation lines in the middle
  of a job's output that no user of netslim can act on).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
from collections.abc import Iterator

import torch

# torch's pytree logger: torchao 0.18, imported by netslim's int8 path and by every transformers
# model module, registers enums on import that torch 2.14 logs a deprecation for
# (``W... _pytree.py:630] <enum ...> is an Enum subclass``)
PYTREE_LOG = "torch.utils._pytree"
# the root logger: onnxruntime's quantizer logs its advice there at WARNING
ROOT_LOG = ""
# onnxscript's: the ONNX exporter's constant folding logs each node it could not fold
# (``Evaluation failed: cannot reshape array of size 1 into shape (1,7)``), the export unharmed
ONNXSCRIPT_LOG = "onnxscript"


@contextlib.contextmanager
def quiet_log(name: str) -> Iterator[None]:
    """Hold the logger ``name`` at ERROR for the block; its level is always restored."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


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


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_retaining = False


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep the memory torch frees for the next tensor: no ``mmap`` for large
    blocks, no trimming of the heap. Returns False (nothing changed) where libc is not glibc.

    Why: eager PyTorch on CPU frees every activation after its last use. glibc hands blocks
    larger than its mmap threshold back to the kernel, so the next forward touches fresh pages
    and takes a page fault per 4 KiB. On the VM of docs/latency.md (*What the allocator
    costs*) MobileNetV2 at batch 16 took 126,026 faults a forward and ran 2.09x slower than with
    freed memory kept, and their cost moved with the host's load. jemalloc and tcmalloc
    (PyTorch's CPU tuning guide) keep freed memory the same way. The cost: the process keeps
    its peak memory. Time and deploy under the same setting: ``allocator()`` is part of every
    latency table's cache key."""
    global _retaining
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return False
    _retaining = True
    return True


def allocator() -> str:
    """The allocator freed tensor memory goes to: ``jemalloc`` / ``tcmalloc`` / ``mimalloc``
    when preloaded, ``glibc-retain`` after :func:`retain_freed_memory` (or the same settings
    through glibc's ``MALLOC_MMAP_MAX_=0`` and ``MALLOC_TRIM_THRESHOLD_``), else ``system``."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return name
    by_env = os.environ.get("MALLOC_MMAP_MAX_") == "0" and "MALLOC_TRIM_THRESHOLD_" in os.environ
    if _retaining or by_env:
        return "glibc-retain"
    return "system"
