"""Helpers shared by the bench scripts: output paths, markdown tables, JSON results, machine info."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"


def machine_line() -> str:
    from netslim.structural.op_timing import cpu_name

    return (
        f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def git_commit() -> str:
    """The short commit a run ran at ("?" outside a git checkout): docs name it beside the run."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def train_dense(
    spec: str,
    train_loader: Any,
    test_loader: Any,
    *,
    epochs: int,
    lr: float = 1e-3,
    seed: int | None = 0,
    label: str | None = None,
) -> tuple[torch.nn.Module, float, float]:
    """The dense model a bench compares against: seed, build ``spec``, train ``epochs``,
    evaluate; ``(model, test accuracy, training seconds)``, printed as ``label`` when given.
    ``seed=None``: the caller has seeded (and drawn from) the generators already."""
    from netslim import build_model
    from netslim.training import evaluate, seed_everything, train

    if seed is not None:
        seed_everything(seed)
    model = build_model(spec)
    with Stopwatch() as sw:
        if epochs:
            train(model, train_loader, epochs=epochs, lr=lr, progress=False)
    accuracy = evaluate(model, test_loader)
    if label:
        print(f"{label} dense: {100 * accuracy:.2f}% ({sw.seconds:.0f} s)", flush=True)
    return model, accuracy, sw.seconds
