"""Sparse tensors in a safetensors file: a bitmap of the non-zero positions plus the values.

A 90%-sparse float32 weight costs 1 bit per entry plus 4 bytes per survivor (about 0.13x the
dense bytes) instead of 4 bytes per entry. Values are stored exactly, so loading gives the same
tensor (a ``-0.0`` comes back as ``0.0``, which computes the same). Only tensors that get
at least 25% smaller are stored this way; everything else stays a plain safetensors entry.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from netslim.errors import ArtifactError

BITMAP = "::bitmap"
VALUES = "::values"
_WORTH = 0.75  # store sparse when it costs at most this fraction of the dense bytes
_MIN_NUMEL = 64


def _sparse_bytes(tensor: Tensor, nonzero: int) -> int:
    return (tensor.numel() + 7) // 8 + nonzero * tensor.element_size()


def pack(key: str, tensor: Tensor) -> dict[str, Tensor] | None:
    """``{key::bitmap, key::values}`` when that is worth it, else ``None`` (store dense)."""
    if not tensor.is_floating_point() or tensor.numel() < _MIN_NUMEL:
        return None
    keep = (tensor != 0).flatten()
    nonzero = int(keep.sum())
    if _sparse_bytes(tensor, nonzero) > _WORTH * tensor.numel() * tensor.element_size():
        return None
    bits = np.packbits(keep.numpy(), bitorder="little")
    return {
        key + BITMAP: torch.from_numpy(bits),
        key + VALUES: tensor.flatten()[keep].contiguous(),
    }


def unpack(state: dict[str, Tensor], key: str, shape: list[int]) -> Tensor:
    """Rebuild ``key`` (of ``shape``) from its bitmap and values, removing both from ``state``."""
    bits, values = state.pop(key + BITMAP, None), state.pop(key + VALUES, None)
    numel = int(np.prod(shape)) if shape else 1
    if bits is None or values is None or bits.dtype != torch.uint8 or values.dim() != 1:
        raise ArtifactError(f"{key}: its sparse form (bitmap + values) is missing or malformed")
    if bits.numel() != (numel + 7) // 8:
        raise ArtifactError(f"{key}: bitmap of {bits.numel()} bytes for {numel} entries")
    keep = torch.from_numpy(
        np.unpackbits(bits.numpy(), count=numel, bitorder="little").astype(bool)
    )
    if int(keep.sum()) != values.numel():
        raise ArtifactError(f"{key}: {int(keep.sum())} positions but {values.numel()} values")
    out = torch.zeros(numel, dtype=values.dtype)
    out[keep] = values
    return out.reshape(shape)
