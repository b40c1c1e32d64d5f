"""Keeping ranks in agreement: same settings, same masks, same shapes, or a clear error.

Every check is a collective that *every* rank joins and that ends with every rank knowing the
verdict, so a disagreement raises the same error on all ranks instead of leaving some of them
waiting. Collectives carry the group's timeout (``NETSLIM_DIST_TIMEOUT``), so a rank that died
surfaces as an error too. Single process: every function is a cheap no-op.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from netslim.core.masks import canonical_name
from netslim.distributed.env import device, is_initialized, timeout_seconds, world_size
from netslim.errors import ConfigError, NetslimError


class RankMismatchError(NetslimError):
    """Ranks ended a pruning step with different models; continuing would silently diverge."""


def _digest_tensor(digest: bytes) -> Tensor:
    return torch.frombuffer(bytearray(digest), dtype=torch.uint8).to(device())


def _gather_digests(digest: bytes) -> list[str]:
    local = _digest_tensor(digest)
    out = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [bytes(t.cpu().tolist()).hex() for t in out]


def _disagreement(digests: list[str]) -> str:
    return ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))


def verify_same(value: Any, what: str) -> None:
    """Raise ConfigError on every rank unless every rank passed an equal JSON-able ``value``.

    Used at start-up for the job settings (ratio, seed, ...): DDP would quietly overwrite rank
    1's weights with rank 0's, so a mismatched setting must be caught explicitly.
    """
    if not is_initialized():
        return
    text = json.dumps(value, sort_keys=True, default=str)
    digests = _gather_digests(hashlib.sha256(text.encode()).digest())
    if len(set(digests)) > 1:
        raise ConfigError(
            f"ranks were started with different {what} ({_disagreement(digests)}); "
            "launch every rank with the same arguments"
        )


def tensor_digests(model: nn.Module, *, include_weights: bool = False) -> dict[str, str]:
    """Per tensor: sha256 of name, shape, dtype, plus the values of masks (and of weights)."""
    from netslim.core.masks import iter_masks

    out: dict[str, str] = {}
    masks = iter_masks(model)
    named = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in named:
        h = hashlib.sha256(f"{canonical_name(name)}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        if include_weights and not name.endswith(".mask"):
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            h.update(raw.numpy().tobytes())
        out[name] = h.hexdigest()
    for key, mask in masks.items():
        h = hashlib.sha256(f"mask|{key}|{tuple(mask.shape)}".encode())
        h.update(mask.detach().cpu().to(torch.uint8).contiguous().numpy().tobytes())
        out[f"mask:{key}"] = h.hexdigest()
    return dict(sorted(out.items()))


def model_fingerprint(model: nn.Module, *, include_weights: bool = False) -> str:
    """One hex digest of :func:`tensor_digests`: equal on two ranks iff their models agree."""
    digests = tensor_digests(model, include_weights=include_weights)
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def verify_consistent(
    model: nn.Module, *, what: str = "pruning step", include_weights: bool = False
) -> str:
    """All-gather the model fingerprint (masks + shapes); raise :class:`RankMismatchError` on
    every rank, naming the first tensor that differs, if any two ranks disagree.

    Returns the fingerprint (handy for logs and tests).
    """
    digests = tensor_digests(model, include_weights=include_weights)
    fingerprint = hashlib.sha256(json.dumps(digests).encode()).hexdigest()
    if not is_initialized():
        return fingerprint
    gathered = _gather_digests(bytes.fromhex(fingerprint))
    if len(set(gathered)) == 1:
        return fingerprint
    # Everyone learned of the mismatch in the same collective; one more names the culprit.
    per_rank: list[Any] = [None] * world_size()
    dist.all_gather_object(per_rank, digests)
    keys = sorted(set().union(*per_rank))
    first = next(k for k in keys if len({str(d.get(k)) for d in per_rank}) > 1)
    raise RankMismatchError(
        f"ranks disagree after the {what} ({_disagreement(gathered)}); first difference: "
        f"{first}. Pruning decisions must be identical on every rank"
    )


def broadcast_masks_(model: nn.Module, src: int = 0) -> None:
    """Overwrite every netslim mask with rank ``src``'s: the masks are decided on one rank."""
    if not is_initialized():
        return
    from netslim.core.masks import iter_masks

    _broadcast_(iter_masks(model), src, "sets of masked tensors")


def broadcast_state_(model: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer with rank ``src``'s values: weights refitted on each
    rank's own calibration batches (reconstruction) would otherwise differ between ranks."""
    if is_initialized():
        _broadcast_(model.state_dict(), src, "model state layout")


def broadcast_buffers_(model: nn.Module, src: int = 0) -> None:
    """Overwrite every buffer with rank ``src``'s values, after training: DDP hands rank 0's
    buffers to every rank at the start of each forward, so each rank's last training step
    leaves BatchNorm statistics of its own batch (ranks then disagreed after any fine-tuning)."""
    if is_initialized():
        _broadcast_(dict(model.named_buffers()), src, "model buffers")


def _broadcast_(tensors: Mapping[str, Tensor], src: int, what: str) -> None:
    """Each tensor overwritten in place with rank ``src``'s, in name order, once every rank is
    known to hold the same names and shapes (``what`` names them in the error)."""
    verify_same(sorted((k, list(v.shape)) for k, v in tensors.items()), what)
    with torch.no_grad():
        for key in sorted(tensors):
            tensor = tensors[key]
            buffer = tensor.to(device())
            dist.broadcast(buffer, src)
            if buffer is not tensor:
                tensor.copy_(buffer)


def all_reduce_scores_(scores: Mapping[str, Tensor], op: str = "mean") -> None:
    """Sum or average data-dependent importance scores over ranks, in place, in key order.

    A criterion that accumulates activations or gradients over the local shard must call this
    before allocation, or every rank would rank weights on a different sample.
    """
    if not is_initialized():
        return
    if op not in ("mean", "sum"):
        raise ConfigError(f"op must be 'mean' or 'sum', got {op!r}")
    verify_same(sorted(scores), "sets of scored tensors")
    for key in sorted(scores):
        score = scores[key]
        buffer = score.to(device())
        dist.all_reduce(buffer)
        if op == "mean":
            buffer /= world_size()
        if buffer is not score:
            score.copy_(buffer)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (a plan decided once, e.g. channels to drop)."""
    if not is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(timeout_s: float | None = None) -> None:
    """Wait for every rank; with gloo a missing rank is named in the error after ``timeout_s``."""
    if not is_initialized():
        return
    timeout = datetime.timedelta(seconds=timeout_s or timeout_seconds())
    if dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=timeout)
    else:
        dist.barrier(device_ids=[torch.cuda.current_device()])
