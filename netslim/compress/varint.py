"""LEB128 varints for index gaps, vectorised with numpy.

Gaps between kept weights are mostly small at high sparsity, so a variable-length code spends one
byte on most of them while still representing any gap exactly (a fixed 8-bit code would need
Deep Compression's filler entries for long runs of zeros).
"""

from __future__ import annotations

import numpy as np

MAX_BYTES = 10  # enough for any uint64


def encode(values: np.ndarray) -> bytes:
    """Encode non-negative integers (any int dtype) as concatenated LEB128 varints."""
    values = np.asarray(values, dtype=np.uint64).ravel()
    if values.size == 0:
        return b""
    lengths = np.ones(values.shape, dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        lengths += rest > 0
        rest >>= np.uint64(7)
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    for j in range(int(lengths.max())):
        sel = lengths > j
        chunk = (values[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (lengths[sel] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (chunk | more).astype(np.uint8)
    return out.tobytes()


def decode(data: bytes, count: int) -> np.ndarray:
    """Decode exactly ``count`` varints filling all of ``data``; raises ``ValueError`` otherwise."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if count == 0:
        if raw.size:
            raise ValueError("trailing bytes after 0 varints")
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero((raw & 0x80) == 0)
    if ends.size != count or ends[-1] != raw.size - 1:
        raise ValueError(f"expected {count} varints in {raw.size} bytes, found {ends.size}")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > MAX_BYTES:
        raise ValueError("varint longer than 10 bytes")
    values = np.zeros(count, dtype=np.uint64)
    for j in range(int(lengths.max())):
        sel = lengths > j
        chunk = raw[starts[sel] + j].astype(np.uint64) & np.uint64(0x7F)
        values[sel] |= chunk << np.uint64(7 * j)
    return values
