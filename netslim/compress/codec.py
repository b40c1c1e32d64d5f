"""One tensor ↔ bytes: dense or sparse layout, positions as a bitmap or index gaps, values exact,
float16, int8 with a per-tensor or per-channel scale, or shared: 2^b centroids per tensor found
by 1-D k-means, each value stored as its centroid's index (Deep Compression's weight sharing; the
container's zstd then entropy-codes the indices, as Huffman coding did in the paper).

Every choice is written into the tensor's entry, so the decoder never guesses: decoding is a pure
function of the entry and its blobs and reproduces exactly what the encoder represented (bit for
bit in ``exact`` mode; ``q * scale`` in float32 for int8).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from netslim.compress import varint
from netslim.core.config import choice
from netslim.errors import ConfigError

VALUE_MODES = ("exact", "float16", "int8", "int8-channel", "shared4", "shared5", "shared6")
_SHARED_BITS = {"shared4": 4, "shared5": 5, "shared6": 6}
POSITION_MODES = ("auto", "bitmap", "delta")

_DTYPES = {
    str(dt).removeprefix("torch."): dt
    for dt in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16,
        torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
    )
}  # fmt: skip


def dtype_from_name(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {name!r}")
    return _DTYPES[name]


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"cannot compress tensors of dtype {dtype}")
    return name


def _raw(t: Tensor) -> bytes:
    """The tensor's bytes in memory order (little-endian on every platform torch supports)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _from_raw(data: bytes, dtype: torch.dtype, count: int) -> Tensor:
    if len(data) != count * torch.empty((), dtype=dtype).element_size():
        raise ValueError(f"{len(data)} bytes do not hold {count} {dtype} values")
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).clone()


def _positions(flat_mask: np.ndarray, mode: str) -> tuple[str, bytes]:
    bitmap = np.packbits(flat_mask, bitorder="little").tobytes()
    if mode == "bitmap":
        return "bitmap", bitmap
    index = np.flatnonzero(flat_mask).astype(np.int64)
    gaps = np.diff(index, prepend=-1) - 1  # gap 0 = the next position is the neighbour
    delta = varint.encode(gaps)
    if mode == "delta" or len(delta) < len(bitmap):
        return "delta", delta
    return "bitmap", bitmap


def _decode_positions(kind: str, data: bytes, numel: int, nnz: int) -> np.ndarray:
    if kind == "bitmap":
        if len(data) != (numel + 7) // 8:
            raise ValueError("bitmap size does not match the tensor")
        flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel, bitorder="little")
        index = np.flatnonzero(flat)
    elif kind == "delta":
        index = np.cumsum(varint.decode(data, nnz).astype(np.int64) + 1) - 1
    else:
        raise ValueError(f"unknown position encoding {kind!r}")
    if index.size != nnz or (nnz and (index[-1] >= numel or index[0] < 0)):
        raise ValueError("positions do not match the tensor")
    return index


def _scales(values: Tensor, rows: Tensor | None, channels: int) -> Tensor:
    """Symmetric int8 scales: max |v| / 127 per tensor (``rows is None``) or per output channel."""
    mags = values.abs().to(torch.float32)
    if rows is None:
        peak = mags.max().reshape(1) if mags.numel() else torch.zeros(1)
    else:
        peak = torch.zeros(channels).scatter_reduce(0, rows, mags, "amax", include_self=True)
    return torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))


def shared_values(values: Tensor, clusters: int, iterations: int = 30) -> tuple[Tensor, Tensor]:
    """``(centroids, codes)``: 1-D k-means (Lloyd) over ``values`` with ``clusters`` centroids
    initialised evenly between the smallest and largest value. Linear initialisation keeps
    centroids on the rare large weights, which matter most (Han et al., 2016, "Deep
    Compression", section 3.2); codes are uint8 indices into the sorted centroid table."""
    lo, hi = values.min(), values.max()
    centroids = torch.linspace(float(lo), float(hi), clusters)
    for _ in range(iterations):
        codes = _nearest(values, centroids)
        sums = torch.zeros(clusters).index_add_(0, codes, values)
        counts = torch.zeros(clusters).index_add_(0, codes, torch.ones_like(values))
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved.sort().values
    return centroids, _nearest(values, centroids).to(torch.uint8)


def _nearest(values: Tensor, sorted_centroids: Tensor) -> Tensor:
    bounds = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    return torch.bucketize(values, bounds)


def encode_tensor(
    tensor: Tensor,
    *,
    mask: Tensor | None = None,
    values: str = "exact",
    positions: str = "auto",
    lossy_min_ndim: int = 2,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(entry, blobs)`` for one tensor. ``mask`` (kept = True) forces the sparse layout and is
    restored exactly by the decoder; lossy ``values`` apply to floating tensors of at least
    ``lossy_min_ndim`` dimensions (weights), everything else is stored exactly."""
    choice("values mode", values, VALUE_MODES)
    choice("positions mode", positions, POSITION_MODES)
    tensor = tensor.detach().cpu()
    shape = list(tensor.shape)
    flat = tensor.reshape(-1)
    if not (tensor.is_floating_point() and tensor.dim() >= lossy_min_ndim and tensor.numel()):
        values = "exact"
    entry: dict[str, Any] = {"shape": shape, "dtype": _dtype_name(tensor.dtype), "values": values}
    blobs: dict[str, bytes] = {}

    if mask is not None:
        keep = mask.detach().cpu().reshape(-1).to(torch.bool)
    else:  # by bit pattern, so -0.0 (and NaN) survive the exact mode
        keep = flat.contiguous().view(torch.uint8).reshape(flat.numel(), tensor.element_size())
        keep = keep.any(dim=1)
    nnz = int(keep.sum())
    value_size = {"exact": tensor.element_size(), "float16": 2}.get(values, 1)
    if values in _SHARED_BITS:
        value_size = 1 if keep.sum() > 2 ** _SHARED_BITS[values] else tensor.element_size()
    kind, pos = _positions(keep.numpy(), positions)
    sparse = mask is not None or len(pos) + nnz * value_size < flat.numel() * value_size
    if sparse:
        entry.update(layout="sparse", positions=kind, nnz=nnz)
        blobs["positions"] = pos
        index = torch.from_numpy(np.flatnonzero(keep.numpy()))
        kept = flat[index]
    else:
        entry["layout"] = "dense"
        index = torch.arange(flat.numel())
        kept = flat

    if values in _SHARED_BITS and kept.numel() <= 2 ** _SHARED_BITS[values]:
        entry["values"] = values = "exact"  # fewer values than centroids: store them as they are
    if values == "exact":
        blobs["values"] = _raw(kept)
    elif values == "float16":
        blobs["values"] = _raw(kept.to(torch.float16))
    elif values in _SHARED_BITS:
        centroids, codes = shared_values(kept.to(torch.float32), 2 ** _SHARED_BITS[values])
        blobs["values"] = _raw(codes)
        blobs["centroids"] = _raw(centroids)
    else:
        per_row = flat.numel() // shape[0] if shape and shape[0] else 1
        rows = index // per_row if values == "int8-channel" else None
        scale = _scales(kept, rows, shape[0] if shape else 1)
        step = scale[rows] if rows is not None else scale
        q = torch.round(kept.to(torch.float32) / step).clamp_(-127, 127).to(torch.int8)
        blobs["values"] = _raw(q)
        blobs["scale"] = _raw(scale)
    return entry, blobs


def decode_tensor(entry: dict[str, Any], blobs: dict[str, bytes]) -> tuple[Tensor, Tensor | None]:
    """``(tensor, kept_mask or None)``; raises ``ValueError``/``KeyError`` on any inconsistency."""
    dtype = dtype_from_name(entry["dtype"])
    shape = [int(d) for d in entry["shape"]]
    numel = int(np.prod(shape)) if shape else 1
    mode = entry["values"]
    if entry["layout"] == "sparse":
        nnz = int(entry["nnz"])
        index = torch.from_numpy(
            _decode_positions(entry["positions"], blobs["positions"], numel, nnz)
        )
    elif entry["layout"] == "dense":
        nnz = numel
        index = None
    else:
        raise ValueError(f"unknown layout {entry['layout']!r}")

    if mode == "exact":
        kept = _from_raw(blobs["values"], dtype, nnz)
    elif mode == "float16":
        kept = _from_raw(blobs["values"], torch.float16, nnz).to(dtype)
    elif mode in _SHARED_BITS:
        codes = _from_raw(blobs["values"], torch.uint8, nnz).long()
        centroids = _from_raw(blobs["centroids"], torch.float32, 2 ** _SHARED_BITS[mode])
        if codes.numel() and int(codes.max()) >= centroids.numel():
            raise ValueError("a shared-value code points past the centroid table")
        kept = centroids[codes].to(dtype)
    elif mode in ("int8", "int8-channel"):
        q = _from_raw(blobs["values"], torch.int8, nnz).to(torch.float32)
        channels = shape[0] if mode == "int8-channel" else 1
        scale = _from_raw(blobs["scale"], torch.float32, channels)
        if mode == "int8-channel":
            positions = index if index is not None else torch.arange(numel)
            scale = scale[positions // (numel // channels if channels else 1)]
        kept = (q * scale).to(dtype)
    else:
        raise ValueError(f"unknown values mode {mode!r}")

    if index is None:
        return kept.reshape(shape), None
    flat = torch.zeros(numel, dtype=dtype)
    flat[index] = kept
    keep = torch.zeros(numel, dtype=torch.bool)
    keep[index] = True
    return flat.reshape(shape), keep.reshape(shape)
