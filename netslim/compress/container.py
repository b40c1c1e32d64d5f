"""The ``.nsz`` file: a checksummed, zstd-compressed JSON manifest plus tensor blobs.

Layout: ``MAGIC | version (1 byte) | sha256 of the compressed body (32) | body length (8, LE) |
body``; the body decompresses to ``manifest length (4, LE) | manifest JSON | blobs``. The
checksum is verified before anything is decompressed or decoded, and a reader fails with
:class:`ArtifactError` on any mismatch, so a truncated or bit-flipped file is never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from netslim.errors import ArtifactError, UnsupportedModelError

MAGIC = b"NSLZ\x00"
VERSION = 1
_HEADER = struct.Struct("<5sB32sQ")


def _zstd():
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedModelError(
            "compressed artifacts need zstandard: pip install netslim[export]"
        ) from exc
    return zstandard


def pack(manifest: dict[str, Any], blobs: list[bytes], *, level: int = 19) -> bytes:
    """Serialise ``manifest`` (whose entries point into the concatenated ``blobs``)."""
    text = json.dumps(manifest, separators=(",", ":")).encode()
    body = struct.pack("<I", len(text)) + text + b"".join(blobs)
    compressed = _zstd().ZstdCompressor(level=level, write_checksum=True).compress(body)
    digest = hashlib.sha256(compressed).digest()
    return _HEADER.pack(MAGIC, VERSION, digest, len(compressed)) + compressed


def unpack(data: bytes, *, source: str = "data") -> tuple[dict[str, Any], memoryview]:
    """``(manifest, blob area)`` after verifying magic, version, length and checksum."""
    if len(data) < _HEADER.size:
        raise ArtifactError(f"{source} is too short to be a netslim compressed artifact")
    magic, version, digest, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError(f"{source} is not a netslim compressed artifact (bad magic)")
    if version != VERSION:
        raise ArtifactError(f"{source} has format version {version}, this netslim reads {VERSION}")
    body = data[_HEADER.size :]
    if len(body) != length:
        raise ArtifactError(f"{source} is truncated or padded: {len(body)} of {length} body bytes")
    if hashlib.sha256(body).digest() != digest:
        raise ArtifactError(f"{source} does not match its checksum: the file is corrupt")
    zstd = _zstd()
    try:
        raw = zstd.ZstdDecompressor().decompress(body)
    except zstd.ZstdError as exc:
        raise ArtifactError(f"{source} cannot be decompressed: {exc}") from exc
    try:
        (size,) = struct.unpack_from("<I", raw)
        manifest = json.loads(raw[4 : 4 + size])
    except (struct.error, ValueError) as exc:
        raise ArtifactError(f"{source} has a corrupt manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{source} has a corrupt manifest")
    return manifest, memoryview(raw)[4 + size :]


def read(path: str | os.PathLike) -> tuple[dict[str, Any], memoryview]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist or is not a file")
    return unpack(path.read_bytes(), source=str(path))
