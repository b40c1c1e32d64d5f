"""Shared fixtures: small models defined in files so specs can rebuild them in a fresh process."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build(width: int = 16):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(width * 14 * 14, 32), nn.ReLU(), nn.Linear(32, 10),
        )

    def not_a_model():
        return 42
    """
)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_model.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.fixture(autouse=True)
def _single_thread():
    """Two cores are shared by everything on this machine: keep each test on one thread, and
    start every test from the same random state."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


class FastJob:
    """A prune job small enough for a test (synthetic data, a few hundred samples, one epoch
    each, no latency timing, no progress bars), as ``JobSettings`` or as ``netslim prune`` flags;
    keyword overrides change any setting."""

    BASE: dict = {
        "data": "synthetic",
        "limit_train": 256,
        "limit_test": 128,
        "epochs": 1,
        "finetune_epochs": 1,
        "latency": False,
        "progress": False,
    }

    def settings(self, model: str, **overrides):
        from netslim.jobs.pipeline import JobSettings

        return JobSettings(model=model, **{**self.BASE, **overrides})

    def flags(self, **overrides) -> list[str]:
        values = {**self.BASE, **overrides}
        out: list[str] = []
        for key, value in values.items():
            if key in ("latency", "progress"):
                out += [] if value else [f"--no-{key}"]
            else:
                out += [f"--{key.replace('_', '-')}", str(value)]
        return out


@pytest.fixture
def fast_job() -> FastJob:
    return FastJob()
