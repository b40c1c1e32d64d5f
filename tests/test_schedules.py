"""netslim.schedules: the AGP curve, iterative targets and the training-callback drivers."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from netslim.core.history import get_history
from netslim.errors import ConfigError
from netslim.schedules import (
    AGPScheduler,
    agp_sparsity,
    iterative_ratios,
    run_agp,
    run_iterative,
    run_oneshot,
)
from netslim.unstructured import Unstructured, sparsity_report

N_TARGETS = 16 * 32 + 32 * 24  # prunable weights of mlp() (the classifier is left alone)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4)
    )


def sparsity(model: nn.Module) -> float:
    return sparsity_report(model)["overall"]["sparsity"]


def test_agp_curve() -> None:
    kw = {"s_init": 0.1, "s_final": 0.9, "start_step": 100, "end_step": 300}
    assert agp_sparsity(0, **kw) == 0.1
    assert agp_sparsity(100, **kw) == 0.1
    assert agp_sparsity(200, **kw) == pytest.approx(0.9 - 0.8 * 0.5**3)
    assert agp_sparsity(150, **kw) == pytest.approx(0.9 - 0.8 * 0.75**3)
    assert agp_sparsity(300, **kw) == 0.9
    assert agp_sparsity(10_000, **kw) == 0.9
    values = [agp_sparsity(t, **kw) for t in range(0, 400, 10)]
    assert values == sorted(values)


@pytest.mark.parametrize(
    "kw",
    [
        {"s_init": 0.5, "s_final": 0.4, "start_step": 0, "end_step": 10},
        {"s_init": 0.0, "s_final": 1.0, "start_step": 0, "end_step": 10},
        {"s_init": -0.1, "s_final": 0.5, "start_step": 0, "end_step": 10},
        {"s_init": 0.0, "s_final": 0.5, "start_step": 10, "end_step": 10},
        {"s_init": 0.0, "s_final": 0.5, "start_step": -1, "end_step": 10},
    ],
)
def test_agp_rejects_bad_window(kw: dict) -> None:
    with pytest.raises(ConfigError):
        agp_sparsity(0, **kw)


def test_agp_scheduler_masks_follow_curve() -> None:
    model = mlp()
    sched = AGPScheduler(
        model, Unstructured(ratio=0.8), total_steps=100, update_every=10, end_step=80
    )
    seen = {}
    for step in range(100):
        applied = sched.on_step(step, 0.123)  # trainers may pass extra arguments
        if applied is not None:
            seen[step] = applied
            expected = agp_sparsity(step, s_init=0.0, s_final=0.8, start_step=0, end_step=80)
            assert applied == pytest.approx(expected)
            assert sparsity(model) == round(expected * N_TARGETS) / N_TARGETS
    assert sorted(seen) == [0, 10, 20, 30, 40, 50, 60, 70, 80]  # step 0 attaches empty masks
    assert sparsity(model) == round(0.8 * N_TARGETS) / N_TARGETS
    assert sched.finish() == 0.8 and len(sched.updates) == 9
    assert [step["kind"] for step in get_history(model)] == ["masks"]  # one record suffices


def test_agp_scheduler_defaults_and_validation() -> None:
    sched = AGPScheduler(mlp(), Unstructured(ratio=0.5), total_steps=100)
    assert (sched.end_step, sched.update_every) == (80, 8)
    with pytest.raises(ConfigError):
        AGPScheduler(mlp(), Unstructured(nm=(2, 4)), total_steps=10)
    with pytest.raises(ConfigError):
        AGPScheduler(mlp(), Unstructured(), total_steps=0)
    with pytest.raises(ConfigError):
        AGPScheduler(mlp(), Unstructured(), total_steps=10, update_every=0)
    with pytest.raises(ConfigError):
        AGPScheduler(mlp(), {"ratio": 0.5}, total_steps=10)


def test_agp_scheduler_start_masks_at_s_init() -> None:
    model = mlp()
    sched = AGPScheduler(
        model, Unstructured(ratio=0.8), total_steps=100, update_every=10, s_init=0.5, end_step=50
    )
    assert sched.start() == 0.5
    assert sparsity(model) == round(0.5 * N_TARGETS) / N_TARGETS
    assert sched.start() is None  # masks exist: nothing to redo
    assert sched.on_step(1) is None  # not an update step: the masks stay at s_init
    assert sparsity(model) == round(0.5 * N_TARGETS) / N_TARGETS
    assert sched.on_step(10) == pytest.approx(0.8 - 0.3 * 0.8**3)
    assert sched.updates[0] == (0, 0.5)
    dense = mlp()
    assert AGPScheduler(dense, Unstructured(ratio=0.8), total_steps=100).start() is None
    assert sparsity(dense) == 0.0 and get_history(dense) == []


def test_iterative_ratios() -> None:
    assert iterative_ratios(0.9, 3, mode="linear") == pytest.approx([0.3, 0.6, 0.9])
    geo = iterative_ratios(0.875, 3)
    assert geo == pytest.approx([0.5, 0.75, 0.875])  # half of what remains, each round
    assert geo[-1] == 0.875
    assert iterative_ratios(0.5, 1) == [0.5]
    for bad in [(1.0, 3), (-0.1, 3), (0.5, 0), (0.5, 2.0)]:
        with pytest.raises(ConfigError):
            iterative_ratios(*bad)
    with pytest.raises(ConfigError):
        iterative_ratios(0.5, 2, mode="cosine")


def test_run_oneshot_calls_finetune_after_pruning() -> None:
    model = mlp()
    result = run_oneshot(model, Unstructured(ratio=0.5), lambda m: sparsity(m))
    assert result["finetune"] == pytest.approx(0.5)
    assert run_oneshot(mlp(), Unstructured(ratio=0.5))["finetune"] is None


def test_run_iterative_rounds() -> None:
    model = mlp()
    result = run_iterative(model, Unstructured(ratio=0.75), 2, lambda m: sparsity(m))
    assert [r["finetune"] for r in result["rounds"]] == pytest.approx([0.5, 0.75], abs=1e-3)
    assert result["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert len(get_history(model)) == 2


def test_run_agp_with_training_callback() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def train_fn(m: nn.Module, on_step) -> int:
        for step in range(30):  # stops before end_step: the driver finishes the schedule
            opt.zero_grad()
            m(torch.randn(4, 16)).sum().backward()
            opt.step()
            on_step(step)
        return 30

    result = run_agp(model, Unstructured(ratio=0.6), train_fn, total_steps=50, update_every=5)
    assert result["train"] == 30
    assert result["sparsity"] == pytest.approx(round(0.6 * N_TARGETS) / N_TARGETS)
    assert [s for _, s in result["updates"]] == sorted(s for _, s in result["updates"])


def test_run_agp_trains_from_s_init() -> None:
    model = mlp()
    seen = []

    def train_fn(m: nn.Module, on_step) -> None:
        seen.append(sparsity(m))  # before the first step
        for step in range(1, 21):
            on_step(step)

    result = run_agp(
        model, Unstructured(ratio=0.9), train_fn, total_steps=20, update_every=5, s_init=0.6
    )
    assert seen == [round(0.6 * N_TARGETS) / N_TARGETS]
    assert result["updates"][0] == (0, 0.6)
    assert result["sparsity"] == pytest.approx(round(0.9 * N_TARGETS) / N_TARGETS)


def test_drivers_validate_inputs() -> None:
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError):
        run_oneshot(model, Unstructured(), finetune="not callable")
    with pytest.raises(ConfigError):
        run_iterative(model, Unstructured(), 0, None)
    with pytest.raises(ConfigError):
        run_iterative(model, Unstructured(nm=(2, 4)), 2, None)
    with pytest.raises(ConfigError):
        run_agp(model, Unstructured(), None, total_steps=10)
    with pytest.raises(ConfigError):
        run_oneshot(model, object())
    assert list(model.state_dict()) == list(before)
    assert get_history(model) == []


def test_prune_job_agp_start_masks_before_the_first_step(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--agp-start``: the job's AGP fine-tuning starts at that sparsity, ends at --ratio."""
    from netslim.jobs import pipeline

    seen: list[float] = []
    fit = pipeline._Trainer.fit

    def spy(self, model, epochs, **kwargs):
        if kwargs.get("on_step") is not None:  # the AGP fine-tuning
            seen.append(sparsity_report(model)["overall"]["sparsity"])
        return fit(self, model, epochs, **kwargs)

    monkeypatch.setattr(pipeline._Trainer, "fit", spy)
    settings = pipeline.JobSettings(
        model="zoo:lenet300", schedule="agp", ratio=0.8, agp_start=0.6, data="synthetic",
        limit_train=128, limit_test=64, epochs=0, finetune_epochs=1, batch_size=32,
        latency=False, progress=False, out=str(tmp_path / "out"),
    )  # fmt: skip
    report = pipeline.run_job(settings)
    assert seen == [pytest.approx(0.6, abs=0.01)]
    assert report["sparsity"]["overall"]["sparsity"] == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"agp_start": 0.3}, "--agp-start applies to --schedule agp"),
        ({"agp_start": 0.8, "schedule": "agp"}, "--agp-start must be in [0, --ratio 0.8)"),
    ],
)
def test_agp_start_is_checked_before_any_work(changes: dict, message: str) -> None:
    from netslim.jobs.settings import JobSettings

    with pytest.raises(ConfigError, match=re.escape(message)):
        JobSettings(model="zoo:lenet300", ratio=0.8, **changes)
