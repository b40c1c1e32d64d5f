"""Training throughput with 1 and 2 processes under torchrun: one command, writes docs/distributed.md.

    .venv/bin/python bench/distributed.py [--steps N] [--batch-size B]

LeNet-300-100 on Fashion-MNIST through ``netslim.training.train`` (the loop every netslim method
uses): a plain single process, then ``torchrun`` with 1 and 2 processes (DDP over gloo on CPU,
NCCL when every process has a GPU). The global batch is the same in every run (each of N ranks
loads batch/N), so samples/second compare like for like. Each configuration trains a short
warm-up, then ``--steps`` timed steps; rank 0 reports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, machine_line, markdown_table, write_results  # noqa: E402

WARMUP = 10


def worker(args: argparse.Namespace) -> None:
    """One rank (or the plain single process): time ``args.steps`` training steps."""
    import torch

    import netslim.distributed as nd
    from netslim.data import make_loaders
    from netslim.models import get_zoo_model
    from netslim.training import seed_everything, train

    if args.threads:
        torch.set_num_threads(args.threads)
    nd.init_from_env()
    seed_everything(0)
    loader, _ = make_loaders("fashion-mnist", batch_size=args.batch_size, seed=0)
    model = get_zoo_model("lenet300").to(nd.device())
    common = {"epochs": 100, "lr": 1e-3, "progress": False}
    train(model, loader, max_steps=WARMUP, **common)  # imports, allocator, DDP buckets
    nd.barrier()
    start = time.perf_counter()
    result = train(model, loader, max_steps=args.steps, **common)
    nd.barrier()
    seconds = time.perf_counter() - start
    if nd.is_main():
        payload = {
            "world_size": nd.world_size(),
            "backend": nd.backend() if nd.is_initialized() else "none",
            "threads_per_process": torch.get_num_threads(),
            "steps": result.steps,
            "global_batch": args.batch_size,
            "seconds": seconds,
            "samples_per_second": result.steps * args.batch_size / seconds,
            "final_loss": result.losses[-1],
        }
        Path(args.result).write_text(json.dumps(payload))
    nd.shutdown()


def _launch(label: str, nproc: int | None, args: argparse.Namespace, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        me = [str(Path(__file__).resolve()), "--worker", "--result", str(result)]
        me += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
        me += ["--threads", str(threads)]
        if nproc is None:
            cmd = [sys.executable, *me]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd += ["--nproc-per-node", str(nproc), *me]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        wall = time.perf_counter() - started
        out = json.loads(result.read_text())
    out.update(label=label, wall_seconds_incl_startup=wall, load_before=load)
    print(f"{label}: {out['samples_per_second']:.0f} samples/s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the doc from the last saved results"
    )
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.render_only:
        saved = json.loads((DOCS / "results" / "distributed.json").read_text())
        args.steps, args.batch_size = saved["runs"][0]["steps"], saved["runs"][0]["global_batch"]
        (DOCS / "distributed.md").write_text(render(saved["runs"], args, saved["machine"]))
        return
    cores = os.cpu_count() or 1
    runs = [
        _launch("1 process, no torchrun, 1 thread", None, args, 1),
        _launch(f"1 process, no torchrun, {min(cores, 2)} threads", None, args, min(cores, 2)),
        _launch("torchrun, 1 process, 1 thread", 1, args, 1),
        _launch("torchrun, 2 processes, 1 thread each (DDP)", 2, args, 1),
    ]
    write_results("distributed", {"machine": machine_line(), "runs": runs})
    (DOCS / "distributed.md").write_text(render(runs, args, machine_line()))
    print(f"wrote {DOCS / 'distributed.md'}")


def render(runs: list[dict], args: argparse.Namespace, machine: str) -> str:
    base = runs[0]["samples_per_second"]
    rows = [
        [
            r["label"],
            r["backend"],
            f"{r['samples_per_second']:.0f}",
            f"{r['samples_per_second'] / base:.2f}x",
            f"{r['wall_seconds_incl_startup']:.1f}",
            f"{r['load_before']:.1f}",
        ]
        for r in runs
    ]
    table = markdown_table(
        ["configuration", "backend", "samples/s", "vs 1 process", "wall s (with start-up)", "load"],
        rows,
    )
    return TEMPLATE.format(
        machine=machine,
        steps=args.steps,
        batch=args.batch_size,
        table=table,
        cores=os.cpu_count(),
    )


TEMPLATE = """# Distributed training and resumable runs

Every training-based netslim method (fine-tuning with or without distillation, AGP and
iterative schedules, L1-regularised training) runs on PyTorch's own distributed engine:
`torchrun` starts the processes, netslim joins the process group from torchrun's environment
(`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) and trains through
`DistributedDataParallel`. Without torchrun the same command runs in one process.

## Throughput (bench/distributed.py)

LeNet-300-100 on Fashion-MNIST, {steps} timed steps after a warm-up, global batch {batch}
(each of N processes loads {batch}/N samples per step). Machine: {machine}.

{table}

**Read this as overhead, not speed-up.** This machine has {cores} CPU cores; two processes
with one thread each compete for the same cores as one process with two threads, and every
step adds a gloo all-reduce of the 266k gradients plus the buffer broadcast. LeNet-300-100 is
tiny, so communication dominates. The `load` column is the machine's 1-minute load average
when the run started: other work on the shared cores hurts most the configurations that need
both cores at once (two OpenMP threads spin-wait on each other; two ranks wait in every
all-reduce), so compare rows measured under similar load. Data-parallel training pays off with one GPU (or one
many-core CPU socket) per process and models whose step time dwarfs the all-reduce.

Re-run with `make bench-distributed` or `.venv/bin/python bench/distributed.py`.

The NCCL path was checked by hand on one H200 (torch 2.11, `torchrun --nproc-per-node 1`):
NCCL was picked automatically, a structural-style shrink in the middle of training kept
training on the GPU, and an AGP + distillation job killed after its 4th checkpoint and resumed
ended with weights bit-identical to the uninterrupted run. Several GPUs were not available.

## Commands

One machine, several GPUs (NCCL is chosen automatically when every process has a GPU;
gloo otherwise; set `NETSLIM_DIST_BACKEND=gloo|nccl` to force one):

```bash
torchrun --standalone --nproc-per-node 4 -m netslim prune zoo:resnet20 \\
    --schedule agp --ratio 0.9 --epochs 10 --finetune-epochs 5 --batch-size 512 \\
    --checkpoint-every 200 --out runs/resnet20-agp
```

A cluster of 2 machines with 8 GPUs each (run the same command on every machine; the
rendezvous endpoint is any host:port all machines can reach, usually the first machine):

```bash
torchrun --nnodes 2 --nproc-per-node 8 \\
    --rdzv-backend c10d --rdzv-endpoint node0.example.org:29400 --rdzv-id prune-42 \\
    -m netslim prune zoo:vgg_small --schedule iterative --rounds 3 --ratio 0.9 \\
    --batch-size 1024 --checkpoint-every 500 --out /shared/runs/vgg-iter
```

CPU only (gloo), e.g. to test a launch locally:

```bash
torchrun --standalone --nproc-per-node 2 -m netslim prune zoo:lenet300 \\
    --data synthetic --schedule agp --ratio 0.8 --batch-size 64
```

Resume after an interruption (same command, plus `--resume`; the directory holds `latest.json`
or a `checkpoints/` folder that does):

```bash
torchrun --standalone --nproc-per-node 4 -m netslim prune zoo:resnet20 \\
    --schedule agp --ratio 0.9 --epochs 10 --finetune-epochs 5 --batch-size 512 \\
    --out runs/resnet20-agp --resume runs/resnet20-agp
```

## What netslim guarantees

- **Batch size is global.** `--batch-size` is the batch of one optimizer step over all ranks;
  each rank loads `batch / world_size`. A world size that does not divide it is a ConfigError
  on every rank. Each rank reads its own shard (`DistributedSampler`, reshuffled per epoch).
- **Same settings everywhere.** Every rank hashes its job settings and the hashes are
  all-gathered before any work: ranks launched with a different ratio, seed, model, ... stop
  with the same clear error (DDP would otherwise quietly copy rank 0's weights).
- **Same pruning decisions everywhere.** Unstructured masks are computed on every rank, then
  rank 0's masks are broadcast; after each pruning step (one-shot, each iterative round, each
  AGP update) `netslim.distributed.verify_consistent(model)` all-gathers a hash of every mask
  and every tensor shape and raises `RankMismatchError` on every rank, naming the first tensor
  that differs. Criteria that accumulate data or gradients over a rank's shard must average
  their scores with `netslim.distributed.all_reduce_scores_` before allocation. At the end of a
  job a hash that includes all weights is compared too (`final model fingerprint` in the log).
- **No hangs.** Every check is a collective that all ranks join; collectives carry the process
  group's timeout (`NETSLIM_DIST_TIMEOUT`, default 300 s), so a rank that died surfaces as an
  error, and torchrun stops the other ranks when one fails.
- **Structural pruning mid-training.** When a hook swaps parameters (physical channel removal),
  the training loop slices the optimizer's momentum / Adam moments with the same index
  selections (`netslim.training.optim_state.shrink_optimizer_state`), rebuilds the DDP wrapper
  and verifies the ranks agree. The engine announces a swap with
  `note_replacements(model, {{old_param: (new_param, [(dim, kept_indices), ...])}})`
  (`None` instead of a pair: parameter removed).
- **Only rank 0 writes** reports, plots, the model and checkpoints; log lines name the rank
  (`[rank 1/4] ...`).

## Checkpoints and resume

`--checkpoint-every N` saves every N optimizer steps into `OUT/checkpoints/` (or
`--checkpoint-dir`): the model with its mask buffers and history (netslim format, safetensors +
JSON), the teacher when distilling, optimizer and LR-scheduler state, Python/NumPy/torch RNG
states, the epoch and batch position, the schedule's state (AGP) and the results of finished
stages. No pickles: tensors in safetensors, the rest in JSON. Each checkpoint is written under
a temporary name, synced and renamed, then `latest.json` is replaced atomically, so a `kill -9`
at any moment leaves the previous checkpoint intact; the two newest are kept.

`--resume DIR` rebuilds the model from the checkpoint, skips the finished stages, restores
optimizer, schedule, RNG and data position and continues with the next batch. In one process
with deterministic kernels the resumed run ends with **bit-identical** weights to an
uninterrupted run with the same seed (tested with a SIGKILL in the middle of an AGP epoch).
Every checkpoint stores a fingerprint of the settings that decide the result (model, method,
ratio, schedule, data, seed, batch size, world size, ...): resuming with a different one is a
ConfigError that lists the differences. Output paths, progress bars and the checkpoint
interval are not part of it.
"""


if __name__ == "__main__":
    main()
