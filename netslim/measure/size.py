"""On-disk size of the model's weights as a safetensors file.

Measured on the effective state dict (masks folded in, mask buffers dropped) so the number is
what a deployed dense model costs: unstructured sparsity does not shrink it, removing channels
does.
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


def saved_size_bytes(model: nn.Module) -> int:
    """Bytes of the safetensors serialisation of the effective state dict."""
    return len(save(_unshared(effective_state_dict(model))))
