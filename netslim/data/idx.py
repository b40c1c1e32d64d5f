"""Reader and writer for the IDX format used by MNIST-style data sets.

IDX is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the raw big-endian values. Files are often gzipped; we
detect that from the content, not the name, so renamed files still load. Every way a file can be
broken (bad magic, wrong size, damaged gzip stream) becomes a :class:`DataError` naming the file,
because a half-read data set silently trains a wrong model.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from netslim.errors import DataError

# type code → big-endian numpy dtype, as defined by the format.
_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the array stored in an IDX file (raw or gzipped), in native byte order.

    uint8 arrays are returned without a copy and are read-only.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    return _parse(data, path)


def _parse(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _CODES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = _CODES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions, {len(data)} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(shape)
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {kind}: shape {tuple(shape)} needs {expected} bytes, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as IDX, gzipped when the name ends in ``.gz`` (reproducible bytes)."""
    array = np.asarray(array)
    code = next(
        (
            c
            for c, dt in _CODES.items()
            if dt.kind == array.dtype.kind and dt.itemsize == array.dtype.itemsize
        ),
        None,
    )
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise DataError(f"{path}: IDX cannot store a {array.ndim}-d {array.dtype} array")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_CODES[code], copy=False).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
