"""The parts of a prune job's ``report.json`` read off the run: before and after, the training
budget, warnings, the data and the masks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from netslim.core.masks import iter_masks, sparsity_report
from netslim.errors import NetslimWarning, warn
from netslim.jobs.settings import JobSettings, extra_epochs


def training_budget(settings: JobSettings, baseline: dict[str, Any] | None) -> dict[str, Any]:
    """What 'before' and 'after' were trained with, said plainly in the report."""
    extra = extra_epochs(settings)
    if settings.data is None:
        before = "the model as built or loaded (no data: nothing trained)"
    elif settings.method == "gate":
        before = "the model as built or loaded (gate training happens in the pruning step)"
    else:
        before = f"the dense model after {settings.epochs} training epoch(s)"
    budget: dict[str, Any] = {
        "before": before,
        "after": f"pruned, with {extra} more training epoch(s) than 'before'",
        "dense_baseline": baseline,
    }
    if baseline is None and extra:
        budget["note"] = (
            f"the dense model did not get those {extra} extra epoch(s), so part of any accuracy "
            "change is training, not pruning: pass --dense-baseline to train a dense copy with "
            "the same budget"
        )
    return budget


@contextmanager
def noted_warnings(notes: list[str]) -> Iterator[None]:
    """Inside, the messages of the :class:`NetslimWarning` warnings raised (a time plan's lowered
    floor, a pruned model no faster) are appended to ``notes`` for the report; every warning is
    still shown, as it would have been, when the block ends."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        for w in caught:
            if issubclass(w.category, NetslimWarning):
                notes.append(str(w.message))
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def result_warnings(steps: list[dict[str, Any]]) -> list[str]:
    """Results the user should not read as success without a second look: what the pruning
    steps warned of (shown when it happened) and a gate training that missed its target."""

    found = [note for step in steps for note in step.get("warnings", [])]
    for step in steps:
        opened, target = step.get("open_after_training"), step.get("target_open")
        if opened is not None and target is not None and opened != target:
            found.append(
                f"gate training left {opened} gates open, not the target {target}: the {target} "
                "blocks with the highest gate logits were kept anyway (train longer with "
                "--epochs, or check the result)"
            )
            warn(found[-1])
    return found


def data_summary(settings: JobSettings, train_loader: Any, test_loader: Any) -> dict[str, Any]:
    """What the model was trained and scored on: sizes, classes, input shape, preprocessing."""
    from netslim.data import loader_info

    info = loader_info(test_loader)
    if info is None:
        return {"source": settings.data}
    return {
        "source": settings.data,
        "train_samples": len(train_loader.dataset),
        "test_samples": len(test_loader.dataset),
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "preprocessing": info.preprocessing,
    }


def make_report(
    settings: JobSettings,
    before: dict[str, Any],
    after: dict[str, Any],
    steps: list[dict[str, Any]],
    masks: dict[str, Any],
) -> dict[str, Any]:
    report: dict[str, Any] = {"settings": asdict(settings)}
    for key in (
        "params",
        "nonzero_params",
        "macs",
        "latency_ms",
        "latency_batch_ms",
        "size_bytes",
        "accuracy",
    ):
        report[f"{key}_before"] = before.get(key)
        report[f"{key}_after"] = after.get(key)
    report.update(masks)
    widths_before, widths_after = before.get("widths", {}), after.get("widths", {})
    report["widths"] = {
        name: [widths_before[name], widths_after[name]]
        for name in widths_before
        if name in widths_after
    }
    # report names are CLI names (the method packages say "gates"/"layers")
    report["steps"] = [
        {**s, "method": _CLI_NAMES.get(s["method"], s["method"])} if "method" in s else s
        for s in steps
    ]
    pruned = [s["accuracy_after_prune"] for s in steps if "accuracy_after_prune" in s]
    report["accuracy_after_prune"] = pruned[-1] if pruned else None
    return report


_CLI_NAMES = {"gates": "gate", "layers": "layer", "structural": "channel"}


def masks_summary(settings: JobSettings, model: nn.Module) -> dict[str, Any]:
    """Per-tensor sparsity (and whether the N:M pattern holds), read from the masks."""
    from netslim.unstructured.settings import parse_nm

    summary: dict[str, Any] = {"sparsity": sparsity_report(model)}
    nm = parse_nm(settings.nm)
    if nm is not None:
        from netslim.unstructured.nm import check_nm

        summary["nm_pattern_holds"] = all(
            check_nm(mask.float(), *nm) for mask in iter_masks(model).values()
        )
    return summary


def json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)
