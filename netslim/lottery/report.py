"""What a lottery search shows a person: one progress line per round and the standard plot
(accuracy and early-stopping iteration against the fraction of weights remaining, log scale,
as in Frankle & Carbin's figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {
    "ticket": "winning ticket",
    "reinit": "random reinit",
    "random_mask": "random mask",
    "magnitude": "magnitude + fine-tune",
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def progress_line(rec: dict[str, Any], rounds: int) -> str:
    """``round 2/5: 64.0% weights left | ticket 88.1% (early stop 88.3% at iter 1200; 9 s) | ...``
    (final test accuracy, then test accuracy at the early-stopping iteration)."""
    ticket = rec["ticket"]
    name = "dense" if rec["round"] == 0 else "ticket"
    parts = [
        f"round {rec['round']}/{rounds}: {100 * rec['weights_remaining']:.1f}% weights left",
        f"{name} {_pct(ticket.get('test_acc'))} (early stop {_pct(ticket.get('test_acc_at_reach'))}"
        f" at iter {ticket.get('reach_iter', '-')}; {ticket.get('seconds', 0):.0f} s)",
    ]
    for control, summary in rec.get("controls", {}).items():
        parts.append(f"{control} {_pct(summary.get('test_acc'))}")
    return " | ".join(parts)


def curves(result: dict[str, Any], metric: str = "test_acc") -> dict[str, list[tuple[float, Any]]]:
    """``{series: [(weights remaining, metric), ...]}`` for the ticket (dense point first) and
    every control that ran."""
    dense = result["dense"]
    out: dict[str, list[tuple[float, Any]]] = {
        "ticket": [(dense["weights_remaining"], dense["ticket"].get(metric))]
    }
    for rec in result["rounds"]:
        out["ticket"].append((rec["weights_remaining"], rec["ticket"].get(metric)))
        for control, summary in rec.get("controls", {}).items():
            out.setdefault(control, []).append((summary["weights_remaining"], summary.get(metric)))
    return out


def log_axis(axis: Any, ticks: list[float]) -> None:
    """Weights remaining on a reversed log axis, labelled at the measured points (100, 64, ...)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    axis.set_xscale("log")
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    axis.invert_xaxis()


def write_plot(result: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    """Write the PNG; returns None (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    dense = result["dense"]["ticket"]
    for axis, metric, label in (
        (left, "test_acc_at_reach", "test accuracy at early stop (%)"),
        (right, "reach_iter", "early-stop iteration"),
    ):
        for series, points in curves(result, metric).items():
            points = [(x, y) for x, y in points if y is not None]
            if not points:
                continue
            scale = 1.0 if metric == "reach_iter" else 100.0
            axis.plot(
                [100 * x for x, _ in points],
                [scale * y for _, y in points],
                marker="o",
                label=LABELS.get(series, series),
            )
        reference = dense.get(metric)
        if reference is not None:
            scale = 1.0 if metric == "reach_iter" else 100.0
            axis.axhline(
                scale * reference, color="grey", linestyle="--", linewidth=1, label="dense"
            )
        log_axis(axis, [100 * x for x, _ in curves(result)["ticket"]])
        axis.set_xlabel("weights remaining (%)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend()
    fig.suptitle(title or "Lottery ticket search: ticket vs controls")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
