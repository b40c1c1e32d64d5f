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
        int8 = (report.get("quantize") or {}).get("accuracy_int8")
        if key == "accuracy" and int8 is not None:  # --quantize int8, after fine-tuning
            mode = report["quantize"].get("int8", {}).get("mode", "")
            lines.append(
                f"{f'  int8 ({mode})':28} {_fmt(before, pattern, key):>16} "
                f"{_fmt(int8, pattern, key):>16}  {_ratio(before, int8, key)}"
            )
    if report.get("compressed_bytes"):
        dense, packed = report["dense_fp32_bytes"], report["compressed_bytes"]
        lines.append(
            f"{'compressed model.nsz (bytes)':28} {dense:>16,} {packed:>16,}  "
            f"{dense / packed:.2f}x smaller than dense float32 ({report['compressed']['values']})"
        )
    lines += time_target_lines(report.get("steps") or [])
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


def time_target_lines(steps: list[dict[str, Any]]) -> list[str]:
    """What a time target asked for and what its plan was checked at. The plan's check times
    the pruned and the unpruned model alternately on the target runtime; the latency rows above
    time each model on its own, minutes apart, so on a busy machine they can differ from it by
    several percent: both are shown so the target is read against the right one. An iterative
    schedule plans once a round against the model the round starts from: the target is read
    against the first round's unpruned model, and each round's check against its own start."""
    plans = [s["latency"] for s in steps if isinstance(s.get("latency"), dict)]
    plans = [p for p in plans if p.get("dense_ms") and p.get("budget_ms")]
    if not plans:
        return []
    first, last = plans[0], plans[-1]
    dense, budget = first["dense_ms"], last["budget_ms"]
    where = f"{last.get('runtime')}, {last.get('threads')} thread(s), batch {last.get('batch')}"
    rounds = f", {len(plans)} rounds" if len(plans) > 1 else ""
    lines = [
        f"time target ({where}{rounds}): {budget:.3f} ms, {dense / budget:.2f}x faster than the "
        f"unpruned model's {dense:.3f} ms at planning"
    ]
    for index, plan in enumerate(plans):
        if plan.get("predicted_ms") is None:
            continue
        head = f"  round {index + 1}: plan" if len(plans) > 1 else "  plan"
        start = "the model before the round" if index else "the unpruned model"
        line = f"{head} predicted {plan['predicted_ms']:.3f} ms"
        if plan.get("measured_ms") and plan.get("measured_speedup"):
            speedup = plan["measured_speedup"]
            how = f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"
            line += f"; its check, timed paired with {start}: {plan['measured_ms']:.3f} ms, {how}"
        lines.append(line)
    return lines
