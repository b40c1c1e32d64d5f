"""The DistributedDataParallel wrapper, built and rebuilt around netslim's in-place models.

The wrapper is only a view for the training loop: the user's module is trained in place and is
what every other part of netslim (masks, history, save) sees. After a structural change the old
wrapper's gradient buckets describe parameters that no longer exist, so :func:`rewrap` builds a
fresh one (its constructor re-broadcasts rank 0's weights and buffers).
"""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from netslim.distributed.env import device, is_initialized


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DDP when a process group is active (and not wrapped already), else itself."""
    if not is_initialized() or isinstance(model, DistributedDataParallel):
        return model
    here = device()
    # DDP's default: buffers (BN statistics, netslim masks) follow rank 0 in every forward.
    return DistributedDataParallel(model, device_ids=[here.index] if here.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def rewrap(model: nn.Module) -> nn.Module:
    """A new wrapper for the (reshaped) inner module; the old one is dropped by the caller."""
    return wrap(unwrap(model))
