"""Running netslim under torchrun: process group from the environment, DDP wrapping, and checks
that every rank prunes identically (``netslim.api.prune_consistently_`` uses them for one
pruning step). Everything degrades to a no-op in a single process."""

from netslim.distributed.ddp import rewrap, unwrap, wrap
from netslim.distributed.env import (
    backend,
    device,
    init_from_env,
    is_initialized,
    is_main,
    local_rank,
    log,
    rank,
    shutdown,
    world_size,
)
from netslim.distributed.sync import (
    RankMismatchError,
    all_reduce_scores_,
    barrier,
    broadcast_buffers_,
    broadcast_masks_,
    broadcast_object,
    broadcast_state_,
    model_fingerprint,
    verify_consistent,
    verify_same,
)

__all__ = [
    "RankMismatchError",
    "all_reduce_scores_",
    "backend",
    "barrier",
    "broadcast_buffers_",
    "broadcast_masks_",
    "broadcast_state_",
    "broadcast_object",
    "device",
    "init_from_env",
    "is_initialized",
    "is_main",
    "local_rank",
    "log",
    "model_fingerprint",
    "rank",
    "rewrap",
    "shutdown",
    "unwrap",
    "verify_consistent",
    "verify_same",
    "world_size",
    "wrap",
]
