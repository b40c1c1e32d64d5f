"""Keep the resident memory of a streaming pass near what is alive (glibc; a no-op elsewhere).

glibc serves a large buffer from ``mmap`` and unmaps it on free, but each such free raises its
mmap threshold (up to 32 MiB), so later block-sized temporaries come from the heap instead and,
once freed, stay resident until the heap is trimmed. Within one block's pruning and
reconstruction that is hundreds of MB of dead buffers, growing from block to block (the
streaming rows of docs/llm.md, from bench/llm.py, give the peaks with and without). Between
blocks, freed heap pages go back with ``malloc_trim``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
STREAMING_MMAP_THRESHOLD = 4 << 20
"""Buffers of this size and more are mapped and unmapped whole while streaming."""
GLIBC_MAX_MMAP_THRESHOLD = 32 << 20
"""Where glibc's dynamic threshold settles after large frees (64-bit); set again on exit, since
glibc has no way to read the value back."""

_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    return _LIBC


def return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (``malloc_trim``)."""
    libc = _libc()
    if libc and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextmanager
def large_buffers_mapped(threshold: int = STREAMING_MMAP_THRESHOLD) -> Iterator[None]:
    """Inside the block, buffers of ``threshold`` bytes or more come from ``mmap`` and go back
    to the OS when freed; on exit the threshold is glibc's settled dynamic value again."""
    libc = _libc()
    if not libc or not hasattr(libc, "mallopt"):
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, threshold)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_MAX_MMAP_THRESHOLD)
