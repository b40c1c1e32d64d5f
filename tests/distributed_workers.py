"""Programs the distributed and resume tests launch in other processes (not collected by pytest).

    torchrun --nproc-per-node 2 tests/distributed_workers.py scenarios OUT_DIR
    torchrun --nproc-per-node 2 tests/distributed_workers.py timeplan OUT_DIR
    python tests/distributed_workers.py killjob KILL_AFTER SETTINGS_JSON

``scenarios`` runs, in one process group: mismatched settings, a mask that differs on one rank,
a batch size the world size does not divide, and structural shrinking in the middle of DDP
training. Each rank writes what it saw to ``OUT_DIR/rank<R>.json``.
``timeplan`` plans a time target with timings faked differently on each rank.
``killjob`` runs a prune job and SIGKILLs itself right after checkpoint number KILL_AFTER.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn


def shrink_linear_pair(model: nn.Module, first: str, second: str, keep: int) -> None:
    """Hand-made structural pruning: keep the ``keep`` output units of ``first`` with the largest
    L2 norm, and the matching input columns of ``second``; announce the swaps to the trainer."""
    from netslim.training.optim_state import note_replacements, select

    a, b = model.get_submodule(first), model.get_submodule(second)
    kept = a.weight.detach().norm(dim=1).topk(keep).indices.sort().values
    swaps = {}
    for module, name, selection in (
        (a, "weight", [(0, kept)]),
        (a, "bias", [(0, kept)]),
        (b, "weight", [(1, kept)]),
    ):
        old = getattr(module, name)
        new = nn.Parameter(select(old.detach(), selection).clone())
        setattr(module, name, new)
        swaps[old] = (new, selection)
    a.out_features, b.in_features = keep, keep
    note_replacements(model, swaps)


def _errors(fn) -> str | None:
    from netslim.errors import NetslimError

    try:
        fn()
    except NetslimError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def scenarios(out_dir: Path) -> None:
    import netslim.distributed as nd
    from netslim.data import make_loaders
    from netslim.jobs.pipeline import run_job
    from netslim.jobs.settings import JobSettings
    from netslim.models import get_zoo_model
    from netslim.training import seed_everything, train
    from netslim.unstructured import Unstructured, compute_masks
    from netslim.unstructured.method import apply_masks

    torch.set_num_threads(1)
    assert nd.init_from_env() and nd.world_size() == 2
    rank = nd.rank()
    seen: dict[str, object] = {"rank": rank, "backend": nd.backend()}

    # 1. ranks launched with different settings: a clear error on every rank, before any work.
    settings = JobSettings(
        model="zoo:lenet300",
        data="synthetic",
        ratio=0.5 + 0.1 * rank,
        seed=rank,
        limit_train=64,
        epochs=1,
        latency=False,
        progress=False,
        out=str(out_dir / "never"),
    )
    seen["settings"] = _errors(lambda: run_job(settings))

    # 2. a mask that differs on one rank is caught by verify_consistent on both ranks.
    seed_everything(0)
    model = get_zoo_model("lenet300")
    apply_masks(model, compute_masks(model, Unstructured(ratio=0.5)))
    if rank == 1:
        model[1].parametrizations.weight[0].mask[0, :5] = (
            ~model[1].parametrizations.weight[0].mask[0, :5]
        )
    seen["masks"] = _errors(lambda: nd.verify_consistent(model))

    # 3. a global batch the world size does not divide.
    seen["batch"] = _errors(lambda: make_loaders("synthetic", batch_size=63, limit_train=64))

    # 4. shrink the hidden layer in the middle of DDP training (Adam: moments must follow).
    seed_everything(0)
    model = get_zoo_model("lenet300")
    loader, _ = make_loaders("synthetic", batch_size=64, limit_train=512, seed=0)
    per_epoch = len(loader)

    def on_step(step: int) -> None:
        if step == per_epoch:  # end of the first epoch
            shrink_linear_pair(model, "1", "3", keep=120)

    result = train(model, loader, epochs=4, lr=1e-3, on_step=on_step, progress=False)
    seen["shrink_losses"] = result.losses
    seen["shrink_shape"] = list(model[1].weight.shape)
    seen["shrink_fingerprint"] = nd.verify_consistent(model, include_weights=True)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(seen))
    nd.shutdown()


def timeplan(out_dir: Path) -> None:
    """A time target under torchrun with timings faked per rank, so that each rank alone would
    plan other widths (rank 1 finds the first conv six times dearer): rank 0 plans for all."""
    import tempfile

    import test_latency as tl

    import netslim.distributed as nd
    from netslim.api import prune_consistently_
    from netslim.structural import Channels, op_timing

    nd.init_from_env()
    rank = nd.rank()

    def op_ms(op: op_timing.OpShape) -> float:
        return tl.fake_op_ms(op) * (6.0 if rank == 1 and op.cin == 3 else 1.0)

    def model_ms(model: nn.Module, inputs, target) -> float:
        return tl.fake_model_ms(model, inputs, target, op_ms)

    os.environ["NETSLIM_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"rank{rank}-")
    op_timing.usable_cores = lambda: 64
    op_timing.op_timer = lambda target: op_ms
    op_timing.model_ms = model_ms
    op_timing.time_ratio = lambda m, ref, x, t: model_ms(m, x, t) / model_ms(ref, x, t)
    op_timing.model_faults = lambda model, inputs, target: 0
    op_timing.layer_ms_inside = lambda model, inputs, target: {}
    torch.manual_seed(0)
    model = tl.Net().eval()
    seen = {"error": _errors(lambda: prune_consistently_(
        model, Channels(target_speedup=1.6), example_inputs=(torch.randn(1, 3, 12, 12),)
    ))}  # fmt: skip
    seen["c1"] = model.c1.out_channels
    (out_dir / f"rank{rank}.json").write_text(json.dumps(seen))
    nd.shutdown()


def killjob(kill_after: int, settings_json: str) -> None:
    from netslim.jobs.pipeline import run_job
    from netslim.jobs.settings import JobSettings

    torch.set_num_threads(1)
    saved: list[Path] = []

    def on_checkpoint(path: Path) -> None:
        saved.append(path)
        if len(saved) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    run_job(JobSettings(**json.loads(settings_json)), on_checkpoint=on_checkpoint)


if __name__ == "__main__":
    if sys.argv[1] == "scenarios":
        scenarios(Path(sys.argv[2]))
    elif sys.argv[1] == "timeplan":
        timeplan(Path(sys.argv[2]))
    elif sys.argv[1] == "killjob":
        killjob(int(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
