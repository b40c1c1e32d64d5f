"""``measure``: every number a report needs, in one JSON-ready dict."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from netslim.measure._call import inference
from netslim.measure.counts import count_nonzero_params, count_params
from netslim.measure.latency import _device_of, latency_ms
from netslim.measure.macs import count_macs
from netslim.measure.size import saved_size_bytes

Evaluate = Callable[[nn.Module, Any], float]


def accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy over ``(inputs, labels, ...)`` batches; a stand-in when no trainer's
    ``evaluate`` is given (outputs with ``.logits`` or tuples use the first logits tensor)."""
    device = _device_of(model)
    correct = total = 0
    with inference(model):
        for batch in loader:
            inputs, labels = batch[0].to(device), batch[1].to(device)
            out = model(inputs)
            out = getattr(out, "logits", out)
            if isinstance(out, (tuple, list)):
                out = out[0]
            correct += int((out.argmax(dim=-1) == labels).sum())
            total += labels.numel()
    return correct / total if total else float("nan")


def measure(
    model: nn.Module,
    example_inputs: Any,
    *,
    loader: Iterable | None = None,
    latency: bool = True,
    evaluate: Evaluate | None = None,
) -> dict[str, Any]:
    """params, nonzero_params, sparsity, macs, latency_ms (median), latency_iqr_ms, size_bytes
    and accuracy (``evaluate(model, loader)``, default top-1; ``None`` without a loader)."""
    params = count_params(model)
    nonzero = count_nonzero_params(model)
    result: dict[str, Any] = {
        "params": params,
        "nonzero_params": nonzero,
        "sparsity": 1.0 - nonzero / params if params else 0.0,
        "macs": count_macs(model, example_inputs),
        "latency_ms": None,
        "latency_iqr_ms": None,
        "size_bytes": saved_size_bytes(model),
        "accuracy": None,
    }
    if latency:
        stats = latency_ms(model, example_inputs)
        result["latency_ms"] = stats.median
        result["latency_iqr_ms"] = stats.iqr
    if loader is not None:
        result["accuracy"] = float((evaluate or accuracy)(model, loader))
    return result
