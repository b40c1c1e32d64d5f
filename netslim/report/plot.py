"""The report plot: before/after bars for each measure and per-layer sparsity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MEASURES = (
    ("params", "params"),
    ("nonzero_params", "non-zero"),
    ("macs", "MACs"),
    ("latency_ms", "latency b1"),
    ("latency_batch_ms", "latency b64"),
    ("size_bytes", "size"),
    ("accuracy", "accuracy"),
)


def write_plot(report: dict[str, Any], path: str | Path) -> Path | None:
    """Write a PNG; returns None (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, values, texts = [], [], []
    for key, label in MEASURES:
        before, after = report.get(f"{key}_before"), report.get(f"{key}_after")
        if before:
            labels.append(label)
            values.append(after / before if after is not None else 0.0)
            texts.append(f"{_absolute(before, key)}\n→ {_absolute(after, key)}")
    bars = left.bar(labels, values, color="tab:blue")
    # absolute values beside the ratios: 64.1% -> 65.0% is not "a bar at 1.01"
    for bar, text in zip(bars, texts, strict=True):
        left.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=6,
        )
    left.margins(y=0.25)
    left.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    left.set_ylabel("after / before")
    left.tick_params(axis="x", rotation=30)
    left.set_title("What pruning changed")
    layers = (report.get("sparsity") or {}).get("layers", {})
    widths = {n: w for n, w in (report.get("widths") or {}).items() if w[0] != w[1]}
    if layers:
        names = list(layers)
        right.barh(names, [100.0 * layers[n]["sparsity"] for n in names], color="tab:orange")
        right.set_xlabel("sparsity (%)")
        right.set_xlim(0, 100)
        right.set_title("Per-layer sparsity")
    elif widths:
        names = list(widths)
        right.barh(names, [w[0] for w in widths.values()], color="lightgrey", label="before")
        right.barh(names, [w[1] for w in widths.values()], color="tab:orange", label="after")
        right.set_xlabel("output channels / features")
        right.set_title("Per-layer width")
        right.legend()
    if layers or widths:
        right.invert_yaxis()
        right.tick_params(axis="y", labelsize=7)
    settings = report.get("settings", {})
    fig.suptitle(f"netslim: {settings.get('model', '')} · {settings.get('method', '')}")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _absolute(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    if key == "accuracy":
        return f"{100 * value:.1f}%"
    if key.startswith("latency"):
        return f"{value:.2f} ms"
    if key == "size_bytes":
        return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value:,.0f}"
