"""The before/after table printed at the end of a prune job."""

from __future__ import annotations

from typing import Any

ROWS = (
    ("params", "params", "{:,.0f}"),
    ("non-zero params", "nonzero_params", "{:,.0f}"),
    ("MACs", "macs", "{:,.0f}"),
    ("CPU latency batch 1 (ms)", "latency_ms", "{:.3f}"),
    ("CPU latency batch 64 (ms)", "latency_batch_ms", "{:.3f}"),
    ("saved size (bytes)", "size_bytes", "{:,.0f}"),
    ("test accuracy (%)", "accuracy", "{:.2f}"),
)


def _fmt(value: Any, pattern: str, key: str) -> str:
    if value is None:
        return "-"
    if key == "accuracy":
        value = 100.0 * value
    return pattern.format(value)


def _ratio(before: Any, after: Any, key: str) -> str:
    if before is None or after is None:
        return ""
    if key == "accuracy":
        return f"{100.0 * (after - before):+.2f} pts"
    if not after:
        return ""
    return f"{before / after:.2f}x smaller" if before >= after else f"{after / before:.2f}x larger"


def before_after_table(report: dict[str, Any]) -> str:
    """A fixed-width text table; ``report`` holds ``<key>_before`` / ``<key>_after`` entries
    (and ``accuracy_after_prune``: the accuracy right after pruning, before fine-tuning)."""
    lines = [f"{'':28} {'before':>16} {'after':>16}  change"]
    for label, key, pattern in ROWS:
        before, after = report.get(f"{key}_before"), report.get(f"{key}_after")
        if key == "accuracy" and report.get("accuracy_after_prune") is not None:
            pruned = report["accuracy_after_prune"]
            lines.append(
                f"{'  right after pruning':28} {_fmt(before, pattern, key):>16} "
                f"{_fmt(pruned, pattern, key):>16}  {_ratio(before, pruned, key)}"
            )
            label = "  after fine-tuning"
        lines.append(
            f"{label:28} {_fmt(before, pattern, key):>16} {_fmt(after, pattern, key):>16}  "
            f"{_ratio(before, after, key)}"
        )
    if report.get("compressed_bytes"):
        dense, packed = report["dense_fp32_bytes"], report["compressed_bytes"]
        lines.append(
            f"{'compressed model.nsz (bytes)':28} {dense:>16,} {packed:>16,}  "
            f"{dense / packed:.2f}x smaller than dense float32 ({report['compressed']['values']})"
        )
    budget = report.get("budget") or {}
    if budget.get("dense_baseline"):
        base = budget["dense_baseline"]
        lines.append(
            f"{'dense, same extra budget (%)':28} {'':>16} {100 * base['accuracy']:>16.2f}  "
            f"{base['extra_epochs']} more epoch(s) than 'before', not pruned"
        )
    elif budget.get("note"):
        lines.append(f"note: {budget['note']}")
    return "\n".join(lines)
