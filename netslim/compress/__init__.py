"""Compressed artifacts for sparse models: masks as bitmaps or index gaps, non-zero values exact,
float16 or int8, zstd on top, checksummed (the Deep Compression idea without weight sharing)."""

from netslim.compress.codec import POSITION_MODES, VALUE_MODES, decode_tensor, encode_tensor
from netslim.compress.model import CompressReport, compress, decompress, read_tensors

__all__ = [
    "POSITION_MODES",
    "VALUE_MODES",
    "CompressReport",
    "compress",
    "decode_tensor",
    "decompress",
    "encode_tensor",
    "read_tensors",
]
