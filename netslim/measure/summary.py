"""``measure``: every number a report needs, in one JSON-ready dict."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from netslim.core.batches import device_of
from netslim.measure._call import inference
from netslim.measure.counts import count_nonzero_params, count_params, layer_widths
from netslim.measure.latency import latency_ms
from netslim.measure.macs import count_macs
from netslim.measure.size import saved_size_bytes

Evaluate = Callable[[nn.Module, Any], float]


def accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy over ``(inputs, labels, ...)`` batches; a stand-in when no trainer's
    ``evaluate`` is given (outputs with ``.logits`` or tuples use the first logits tensor)."""
    device = device_of(model)
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
    latency_batch: int | None = None,
) -> dict[str, Any]:
    """params, nonzero_params, sparsity, macs, latency_ms (median), latency_iqr_ms, size_bytes
    and accuracy (``evaluate(model, loader)``, default top-1; ``None`` without a loader).

    ``latency_batch`` also times a batch of that size (``latency_batch_ms``): on small models a
    batch of one measures framework overhead more than the model, so both are reported.
    """
    params = count_params(model)
    nonzero = count_nonzero_params(model)
    result: dict[str, Any] = {
        "params": params,
        "nonzero_params": nonzero,
        "sparsity": 1.0 - nonzero / params if params else 0.0,
        "macs": count_macs(model, example_inputs),
        "latency_ms": None,
        "latency_iqr_ms": None,
        "latency_batch_ms": None,
        "size_bytes": saved_size_bytes(model, sparse=True),  # as netslim.save writes it
        "accuracy": None,
        "widths": layer_widths(model),
    }
    if latency:
        stats = latency_ms(model, example_inputs)
        result["latency_ms"] = stats.median
        result["latency_iqr_ms"] = stats.iqr
        batched = _batched(example_inputs, latency_batch)
        if batched is not None:
            result["latency_batch_ms"] = latency_ms(model, batched, repeats=10).median
    if loader is not None:
        result["accuracy"] = float((evaluate or accuracy)(model, loader))
    return result


# Largest sample the batch timing repeats (an ImageNet image): a batch of 64 640-px images takes
# minutes to time on a CPU, and on inputs that large a batch of one already measures the model.
BATCH_TIMING_MAX_SAMPLE = 3 * 224 * 224


def _batched(example_inputs: Any, batch: int | None) -> tuple[torch.Tensor] | None:
    """The single float example input repeated to ``batch`` rows, when that is meaningful."""
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if not batch or len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor):
        return None
    (x,) = inputs
    if not x.is_floating_point() or x.dim() < 2 or x[:1].numel() > BATCH_TIMING_MAX_SAMPLE:
        return None
    return (x[:1].expand(batch, *x.shape[1:]).contiguous(),)
