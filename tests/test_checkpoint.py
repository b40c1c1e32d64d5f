"""Checkpoints and resume (bit-identical after kill -9), and optimizer state across shrinking."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import FastJob
from safetensors.torch import load_file
from torch import nn

from netslim.cli.main import main
from netslim.errors import ConfigError, PruningError
from netslim.jobs.pipeline import run_job
from netslim.jobs.settings import JobSettings
from netslim.training import seed_everything, train
from netslim.training.checkpoint import RunCheckpoint, load_optimizer_state, optimizer_state
from netslim.training.optim_state import note_replacements, select, shrink_optimizer_state
from netslim.unstructured import Unstructured, compute_masks
from netslim.unstructured.method import apply_masks

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from distributed_workers import shrink_linear_pair  # noqa: E402

# ---------------------------------------------------------------- shrinking optimizer state


def _rows_step(
    optim: str, kept: torch.Tensor, shrink_after: int, *, reset: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a Linear whose loss separates over output rows, once whole and once shrunk to
    ``kept`` rows part-way; kept rows must then follow exactly the same trajectory."""

    def make(weight: torch.Tensor) -> tuple[nn.Parameter, torch.optim.Optimizer]:
        p = nn.Parameter(weight.clone())
        cls = {
            "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
            "adam": lambda ps: torch.optim.Adam(ps, lr=0.1),
        }
        return p, cls[optim]([p])

    torch.manual_seed(0)
    start, x = torch.randn(6, 4), torch.randn(8, 4)
    full, full_opt = make(start)
    small, small_opt = make(start)
    for step in range(shrink_after + 3):
        if step == shrink_after:
            new = nn.Parameter(select(small.detach(), [(0, kept)]).clone())
            if reset:  # what we must not do: forget the momentum / moments of the kept rows
                small, small_opt = make(new.detach())
            else:
                assert shrink_optimizer_state(small_opt, {small: (new, [(0, kept)])}) == 1
                small = new
        for p, opt in ((full, full_opt), (small, small_opt)):
            opt.zero_grad()
            (x @ p.T).pow(2).sum().backward()
            opt.step()
    return full.detach()[kept], small.detach()


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_shrunk_state_continues_exactly(optim: str) -> None:
    kept = torch.tensor([0, 2, 5])
    expected, got = _rows_step(optim, kept, shrink_after=3)
    torch.testing.assert_close(got, expected)  # equal up to matmul blocking of 3 vs 6 rows
    _, forgot = _rows_step(optim, kept, shrink_after=3, reset=True)
    assert not torch.allclose(forgot, expected, atol=1e-3)


def test_shrink_keeps_other_params_and_drops_removed() -> None:
    a, b, c = (nn.Parameter(torch.randn(4, 3)) for _ in range(3))
    opt = torch.optim.Adam([a, b, c])
    sum((p**2).sum() for p in (a, b, c)).backward()
    opt.step()
    new_a = nn.Parameter(a.detach()[:, [0, 2]].clone())
    moments = opt.state[a]["exp_avg"][:, [0, 2]].clone()
    shrink_optimizer_state(opt, {a: (new_a, [(1, torch.tensor([0, 2]))]), c: None})
    assert opt.param_groups[0]["params"] == [new_a, b]
    assert torch.equal(opt.state[new_a]["exp_avg"], moments) and c not in opt.state
    assert opt.state[new_a]["step"] == 1
    opt.step()  # the optimizer still works


def test_shrink_rejects_mismatches() -> None:
    a = nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.SGD([a], lr=0.1, momentum=0.9)
    (a**2).sum().backward()
    opt.step()
    wrong = nn.Parameter(torch.randn(3, 3))
    with pytest.raises(ConfigError, match="new parameter has shape"):
        shrink_optimizer_state(opt, {a: (wrong, [(0, torch.tensor([0, 1]))])})
    with pytest.raises(ConfigError, match="out of range"):
        shrink_optimizer_state(opt, {a: (wrong, [(0, torch.tensor([0, 7, 1]))])})
    assert opt.param_groups[0]["params"] == [a], "nothing changes when a check fails"


def _lenet_and_loader():
    from netslim.data import make_loaders
    from netslim.models import get_zoo_model

    seed_everything(0)
    loader, _ = make_loaders("synthetic", batch_size=64, limit_train=256, seed=0)
    return get_zoo_model("lenet300"), loader


def test_training_continues_after_midway_shrink() -> None:
    model, loader = _lenet_and_loader()
    hook = lambda step: shrink_linear_pair(model, "1", "3", 100) if step == 4 else None  # noqa: E731
    result = train(model, loader, epochs=3, on_step=hook, progress=False)
    assert model[1].weight.shape == (100, 784) and model[3].weight.shape == (100, 100)
    assert result.losses[-1] < result.losses[0]


def test_unannounced_parameter_swap_is_an_error() -> None:
    model, loader = _lenet_and_loader()

    def sneaky(step: int) -> None:
        if step == 2:
            model[1].weight = nn.Parameter(model[1].weight.detach()[:10].clone())

    with pytest.raises(PruningError, match="note_replacements"):
        train(model, loader, epochs=1, on_step=sneaky, progress=False)


def test_optimizer_state_by_name_survives_mask_reordering() -> None:
    model, loader = _lenet_and_loader()
    train(model, loader, epochs=1, max_steps=2, progress=False)  # an optimizer worth saving
    opt = torch.optim.Adam(model.parameters())
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()
    meta, tensors = optimizer_state(opt, model)
    apply_masks(model, compute_masks(model, Unstructured(ratio=0.5)))  # weight now after bias
    fresh = torch.optim.Adam(model.parameters())
    load_optimizer_state(fresh, model, json.loads(json.dumps(meta)), tensors)
    by_name = {
        n.replace("parametrizations.", "").replace(".original", ""): p
        for n, p in model.named_parameters()
    }
    for name, p in by_name.items():
        assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"]), name


# ---------------------------------------------------------------- resume


def _settings(out: Path, **changes) -> JobSettings:
    base = JobSettings(
        model="zoo:lenet300",
        schedule="agp",
        ratio=0.8,
        distill=True,
        data="synthetic",
        limit_train=256,
        limit_test=64,
        epochs=1,
        finetune_epochs=2,
        batch_size=32,
        latency=False,
        progress=False,
        out=str(out),
    )
    return replace(base, **changes)


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path: Path) -> None:
    """8 pre-training steps, then 16 AGP steps with distillation; checkpoint every 3 steps and
    SIGKILL right after the 5th (step 15: inside AGP, mid-epoch, masks attached)."""
    reference = run_job(_settings(tmp_path / "ref"))

    killed = _settings(tmp_path / "killed", checkpoint_every=3)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "distributed_workers.py"), "killjob", "5",
         json.dumps(asdict(killed))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = tmp_path / "killed" / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text()) == {"checkpoint": "ckpt-000005"}
    assert not (tmp_path / "killed" / "model").exists()
    (ckpts / ".ckpt-000006-junk").mkdir()  # what a kill during a write leaves behind

    resumed = run_job(replace(killed, resume=str(tmp_path / "killed")))
    a = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    # the finished unstructured run is saved folded: sparse weights as bitmap + values
    assert sorted(a) == sorted(b) and any(k.endswith("::bitmap") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert resumed["accuracy_after"] == reference["accuracy_after"]
    assert resumed["sparsity"] == reference["sparsity"]
    assert resumed["accuracy_before"] == reference["accuracy_before"]  # from the journal
    assert not (ckpts / ".ckpt-000006-junk").exists()


@pytest.mark.slow
@pytest.mark.noop_ok("resume errors: the first run only writes the checkpoint they refer to")
def test_resume_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the calls without --out must never write runs/ into the repo
    first = _settings(tmp_path / "a", checkpoint_every=4, schedule="oneshot", finetune_epochs=1)
    run_job(first)
    fast = FastJob().flags(limit_test=64, batch_size=32)

    def error(*args: str) -> str:
        assert main(["prune", *args, *fast]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("netslim: error:") and "\n" not in err
        return err

    other_model = error("zoo:lenet5", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b"))
    assert "different run" in other_model and "zoo:lenet5" in other_model
    other_ratio = error("zoo:lenet300", "--ratio", "0.6", "--resume", str(tmp_path / "a"))
    assert "ratio: 0.8 there, 0.6 now" in other_ratio
    assert "no netslim checkpoint" in error("zoo:lenet300", "--resume", str(tmp_path / "empty"))
    again = error("zoo:lenet300", "--checkpoint-every", "2", "--out", str(tmp_path / "a"))
    assert "already holds checkpoints" in again and "--resume" in again


def test_checkpoint_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        RunCheckpoint(tmp_path, every=-1, fingerprint={})
    with pytest.raises(ConfigError):
        JobSettings(model="zoo:lenet300", checkpoint_every=-2)
    with pytest.raises(ConfigError, match="no netslim checkpoint"):
        RunCheckpoint(tmp_path / "none", every=1, fingerprint={}, resume=True)


def test_train_alone_resumes_exactly(tmp_path: Path) -> None:
    """The loop by itself (no job, a model without a spec): stop after step 5 with a checkpoint
    at step 3, resume into a freshly initialised model, end equal to an uninterrupted run."""
    kwargs = {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "scheduler": "none", "progress": False}
    model, loader = _lenet_and_loader()
    train(model, loader, **kwargs)  # uninterrupted: 8 steps
    expected = model.state_dict()

    model, loader = _lenet_and_loader()
    ckpt = RunCheckpoint(tmp_path, every=3, fingerprint={"run": "a"})
    train(model, loader, max_steps=5, checkpoint=ckpt, **kwargs)
    assert (tmp_path / "ckpt-000001").is_dir()

    torch.manual_seed(123)  # a different init and RNG state: the checkpoint restores both
    model, loader = _lenet_and_loader()
    for p in model.parameters():
        nn.init.normal_(p)
    ckpt = RunCheckpoint(tmp_path, every=0, fingerprint={"run": "a"}, resume=True)
    result = train(model, loader, checkpoint=ckpt, **kwargs)
    assert result.steps == 8 and len(result.losses) == 2
    got = model.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    note_replacements(model, {})  # a no-op note is harmless
