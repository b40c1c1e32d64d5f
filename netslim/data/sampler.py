"""The training order: a shuffle that is a pure function of (seed, epoch), sharded per rank.

``DistributedSampler`` already draws each epoch's permutation from ``seed + epoch`` and deals it
out to the ranks; we use it for one process too (one shard), because an order that depends only
on the epoch number is what lets a run resume mid-epoch: restore the epoch, skip the batches
already seen, and the remaining batches are exactly the ones the interrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler

from netslim.errors import ConfigError


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (no dropped samples) that can start its next pass part-way in."""

    def __init__(self, dataset: Sized, *, num_replicas: int, rank: int, seed: int):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self._skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        """The next pass is epoch ``epoch`` without its first ``skip`` indices (one pass only)."""
        if skip < 0 or skip > self.num_samples:
            raise ConfigError(f"cannot skip {skip} of {self.num_samples} samples in an epoch")
        self.set_epoch(epoch)
        self._skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])
