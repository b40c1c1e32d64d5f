"""netslim under torchrun (2 CPU processes, gloo): consistent pruning, DDP training, clear errors.

Each test launches real ``torchrun`` workers, so the process-group setup from torchrun's
environment is exercised exactly as users run it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _env() -> dict[str, str]:
    # A short collective timeout: if a check ever failed to reach every rank, the test would
    # fail in a minute instead of hanging CI.
    return {**os.environ, "NETSLIM_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1"}


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240
    )


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    import netslim.distributed as nd

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert nd.init_from_env() is False
    assert (nd.rank(), nd.world_size(), nd.is_main()) == (0, 1, True)
    assert nd.backend() in ("gloo", "nccl") and nd.device().type == "cpu"
    from netslim.models import get_zoo_model

    model = get_zoo_model("lenet300")
    assert nd.wrap(model) is model
    assert nd.verify_consistent(model) == nd.model_fingerprint(model)
    resnet = get_zoo_model("resnet20")  # 0-d BN counters must hash too
    assert nd.verify_consistent(resnet, include_weights=True) == nd.model_fingerprint(
        resnet, include_weights=True
    )
    nd.verify_same({"ratio": 0.5}, "settings")  # single process: nothing to compare


@pytest.mark.slow
def test_two_rank_checks_and_midtraining_shrink(tmp_path: Path) -> None:
    """Mismatched settings, masks and batch size fail on *every* rank; a structural shrink in
    the middle of DDP training keeps the replicas equal and the loss falling."""
    run = _torchrun(
        [str(ROOT / "tests" / "distributed_workers.py"), "scenarios", str(tmp_path)], ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for seen in ranks:
        assert seen["backend"] == "gloo"
        assert seen["settings"].startswith(
            "ConfigError: ranks were started with different job settings"
        )
        assert seen["masks"].startswith("RankMismatchError") and "mask:1.weight" in seen["masks"]
        assert (
            seen["batch"].startswith("ConfigError: batch size 63")
            and "2 processes" in seen["batch"]
        )
        losses = seen["shrink_losses"]
        assert seen["shrink_shape"] == [120, 784]
        assert losses[-1] < losses[1] < losses[0], losses  # still learning after the shrink
    assert ranks[0]["shrink_fingerprint"] == ranks[1]["shrink_fingerprint"]


@pytest.mark.slow
def test_torchrun_prune_job_agp_with_distillation(tmp_path: Path) -> None:
    out = tmp_path / "job"
    args = [
        "-m", "netslim", "prune", "zoo:lenet300", "--schedule", "agp", "--ratio", "0.8",
        "--distill", "--data", "synthetic", "--limit-train", "256", "--limit-test", "128",
        "--epochs", "1", "--finetune-epochs", "2", "--batch-size", "32",
        "--no-latency", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    run = _torchrun(args, ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    prints = dict(re.findall(r"\[rank (\d)/2\] final model fingerprint (\w+)", run.stderr))
    assert set(prints) == {"0", "1"} and prints["0"] == prints["1"], run.stderr[-2000:]
    assert run.stdout.count("test accuracy") == 1, "only rank 0 prints the table"
    report = json.loads((out / "report.json").read_text())
    assert report["sparsity"]["overall"]["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert report["accuracy_after"] > 0.5
    assert sorted(p.name for p in out.iterdir()) == ["model", "report.json", "report.png"]
    # The same job in one process with the same global batch: accuracy within noise.
    single_out = tmp_path / "single"
    single_args = [*args[:-1], str(single_out)]
    single = subprocess.run(
        [sys.executable, *single_args], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    single_report = json.loads((single_out / "report.json").read_text())
    assert abs(single_report["accuracy_after"] - report["accuracy_after"]) <= 0.1


@pytest.mark.slow
def test_torchrun_channel_job_on_a_batchnorm_model_ends_with_equal_ranks(tmp_path: Path) -> None:
    """DDP gives every rank rank 0's buffers at the start of each forward, so the last training
    step leaves each rank BatchNorm statistics of its own batch: training ends by taking rank
    0's (before, any fine-tuning of a BN model ended in "ranks disagree ... running_mean")."""
    out = tmp_path / "job"
    args = [
        "-m", "netslim", "prune", "zoo:vgg_small", "--method", "channel", "--data", "synthetic",
        "--limit-train", "128", "--limit-test", "64", "--epochs", "1", "--finetune-epochs", "1",
        "--batch-size", "32", "--no-latency", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    run = _torchrun(args, ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    prints = dict(re.findall(r"\[rank (\d)/2\] final model fingerprint (\w+)", run.stderr))
    assert set(prints) == {"0", "1"} and prints["0"] == prints["1"], run.stderr[-2000:]


@pytest.mark.slow
def test_a_time_target_is_planned_on_rank_0_for_every_rank(tmp_path: Path) -> None:
    """A time target's widths come from timings, which differ between ranks: rank 0 plans and
    the others replay its plan (before, each rank planned its own widths from its own timings,
    and the step stopped with "ranks were started with different model state layout")."""
    run = _torchrun(
        [str(ROOT / "tests" / "distributed_workers.py"), "timeplan", str(tmp_path)], ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["error"] is None and ranks[1]["error"] is None, ranks
    assert ranks[0]["c1"] == ranks[1]["c1"] < 32
