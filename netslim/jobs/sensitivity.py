"""The ``netslim sensitivity`` job: train, scan each unit alone, propose ``per_module`` ratios
for a MACs target, and write ``sensitivity.json``, ``sensitivity.md``, ``sensitivity.png`` and
``per_module.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netslim.jobs.model_data import DataSettings


def table(scan: dict[str, Any]) -> str:
    head = "| unit | " + " | ".join(f"{r:.0%}" for r in scan["ratios"]) + " |"
    lines = [f"baseline accuracy {scan['baseline']:.4f}", "", head]
    lines.append("|---" * (len(scan["ratios"]) + 1) + "|")
    for u in scan["units"]:
        lines.append(f"| {u['module']} | " + " | ".join(f"{a:.3f}" for a in u["accuracy"]) + " |")
    return "\n".join(lines)


def plot(scan: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for u in scan["units"]:
        ax.plot(scan["ratios"], u["accuracy"], marker="o", markersize=3, label=u["module"])
    ax.axhline(scan["baseline"], color="grey", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel("fraction of the unit's channels removed")
    ax.set_ylabel("accuracy")
    ax.set_title("Sensitivity: each unit pruned alone")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sensitivity_job(
    source: DataSettings,
    *,
    ratios: list[float],
    criterion: str,
    epochs: int,
    lr: float,
    target_macs: float,
    round_to: int,
    ignore: list[str],
    example_shape: list[int] | None,
    progress: bool,
    out: Path,
    weights: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ``(scan, proposal)`` after writing the four files to ``out``; ``example_shape``
    defaults to one sample of the data."""
    from netslim.core.names import check_module_names
    from netslim.importance import Calibration
    from netslim.jobs.model_data import data_shape, model_and_data
    from netslim.jobs.preflight import check_example_fits
    from netslim.models.spec import make_example_inputs
    from netslim.sensitivity import propose_ratios, scan_sensitivity
    from netslim.sensitivity.scan import check_ratios
    from netslim.structural.importance import get
    from netslim.training import evaluate, seed_everything, train

    get(criterion)  # unknown names and ratios out of range fail before any training
    check_ratios(ratios)
    seed_everything(source.seed)
    model, train_loader, test_loader = model_and_data(source)
    if weights:
        from netslim.models.weights import load_weights

        load_weights(model, weights)
    example = make_example_inputs(model, example_shape or data_shape(train_loader))
    check_example_fits(model, example, source.model)  # before any training, as the scan would
    check_module_names(model, ignore, "ignore")
    if epochs:
        train(model, train_loader, epochs=epochs, lr=lr, progress=progress)
    model.eval()
    scan = scan_sensitivity(
        model,
        example,
        lambda m: evaluate(m, test_loader),
        ratios=ratios,
        criterion=criterion,
        ignore=ignore,
        calibration=Calibration(train_loader, batches=4),
        log=None if not progress else print,
    )
    proposal = propose_ratios(
        model,
        example,
        scan,
        target_macs,
        round_to=round_to,
        ignore=tuple(ignore),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "sensitivity.json").write_text(json.dumps({**scan, "proposal": proposal}, indent=2))
    (out / "sensitivity.md").write_text(table(scan) + "\n")
    (out / "per_module.json").write_text(json.dumps(proposal["per_module"], indent=2))
    plot(scan, out / "sensitivity.png")
    return scan, proposal
