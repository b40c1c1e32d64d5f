"""On-disk size of the model's weights as a safetensors file.

Measured on the effective state dict (masks folded in, mask buffers dropped): what the model
costs once deployed. ``sparse=True`` counts mostly-zero tensors in the bitmap + values form that
``netslim.save`` writes (so unstructured sparsity shrinks it); ``sparse=False`` is the plain
dense float file, the baseline compression ratios are quoted against.
"""

from __future__ import annotations

from safetensors.torch import save
from torch import Tensor, nn

from netslim.measure.effective import effective_state_dict


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors that share memory: keep one copy of exact aliases, copy views."""
    out: dict[str, Tensor] = {}
    seen: dict[int, tuple] = {}
    for name, tensor in tensors.items():
        tensor = tensor.contiguous()
        if tensor.numel() == 0:
            out[name] = tensor
            continue
        ptr = tensor.untyped_storage().data_ptr()
        layout = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if ptr in seen:
            if seen[ptr] == layout:
                continue  # the same tensor under another name (tied weights)
            tensor = tensor.clone()
        else:
            seen[ptr] = layout
        out[name] = tensor
    return out


def saved_size_bytes(model: nn.Module, *, sparse: bool = False) -> int:
    """Bytes of the safetensors serialisation of the effective state dict."""
    tensors = _unshared(effective_state_dict(model))
    if sparse:
        from netslim.io.sparse import pack

        packed: dict[str, Tensor] = {}
        for key, tensor in tensors.items():
            packed.update(pack(key, tensor) or {key: tensor})
        tensors = packed
    return len(save(tensors))
