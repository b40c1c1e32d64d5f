"""Who am I in the job: process-group setup from torchrun's environment, rank-aware logging.

netslim never asks the user to call ``init_process_group``: ``torchrun`` exports ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`init_from_env`
reads them. Without them (plain ``python -m netslim``) everything runs in one process and every
helper here degrades to the single-process answer, so callers never branch on "distributed?".
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import sys

import torch
import torch.distributed as dist

from netslim.errors import ConfigError

TIMEOUT_ENV = "NETSLIM_DIST_TIMEOUT"
BACKEND_ENV = "NETSLIM_DIST_BACKEND"  # force "gloo" or "nccl"
DEFAULT_TIMEOUT_S = 300.0
_OWNED = {"value": False}  # did init_from_env create the group (so shutdown may destroy it)?


def timeout_seconds() -> float:
    """Collective timeout: a rank that died or diverged surfaces as an error, never a hang."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend() -> str:
    """NCCL when every rank on this machine gets a GPU of its own, gloo otherwise (CPU, or more
    ranks than GPUs). Decided from the node's rank count, so all its ranks agree."""
    forced = os.environ.get(BACKEND_ENV)
    if forced and not is_initialized():
        if forced not in ("gloo", "nccl"):
            raise ConfigError(f"{BACKEND_ENV} must be gloo or nccl, got {forced!r}")
        return forced
    if not is_initialized():
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return "nccl" if 0 < local_world <= gpus else "gloo"
    return str(dist.get_backend())


def init_from_env() -> bool:
    """Join the process group torchrun describes; a no-op outside torchrun or if already joined.

    Returns whether a process group is active afterwards.
    """
    if is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    name = backend()
    if name == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=name, timeout=datetime.timedelta(seconds=timeout_seconds()))
    _OWNED["value"] = True
    return True


def shutdown() -> None:
    """Leave the group if :func:`init_from_env` created it (a caller's own group stays)."""
    if _OWNED["value"] and is_initialized():
        # Release DDP wrappers (their reducers hold the group) while it is still alive, and let
        # no rank tear the group down while another still uses it: either made a rank abort at
        # exit ("terminate called without an active exception") on a loaded machine.
        gc.collect()
        with contextlib.suppress(RuntimeError):  # a rank that left early: nothing to wait for
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        dist.destroy_process_group()
    _OWNED["value"] = False


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 writes reports, plots and checkpoints; the others only compute."""
    return rank() == 0


def device() -> torch.device:
    """The device this rank trains on: its own GPU under NCCL, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def log(message: str) -> None:
    """One line on stderr that says which rank speaks (``[rank 1/2]``) when distributed."""
    prefix = f"[rank {rank()}/{world_size()}] " if is_initialized() else ""
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
