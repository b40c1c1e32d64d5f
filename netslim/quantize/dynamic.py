"""Dynamic int8 (int8 weights, activations quantized per batch at run time) for Linear layers.

Uses torchao's ``quantize_`` with ``Int8DynamicActivationInt8WeightConfig``: in torch 2.14
``torch.ao.quantization`` (eager and FX) is deprecated in favour of torchao, and ``quantize_``
swaps weights in place for int8 tensor subclasses, so the module tree (and any structural
pruning) is kept as is and Hugging Face models work without tracing. It runs eagerly on CPU and
gets faster under ``torch.compile``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from netslim.errors import ArtifactError
from netslim.quantize.report import QuantizeReport, weighted_modules

BACKEND = "torchao.quantize_(Int8DynamicActivationInt8WeightConfig)"


def quantize_dynamic_(model: nn.Module, report: QuantizeReport) -> nn.Module:
    """Quantize every ``nn.Linear`` of ``model`` in place, one at a time, so that a layer torchao
    rejects stays in float (and is reported) instead of failing the whole model."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    config = Int8DynamicActivationInt8WeightConfig()
    for name, module in weighted_modules(model).items():
        if type(module) is not nn.Linear:
            report.kept_float[name] = f"{type(module).__name__}: dynamic int8 covers nn.Linear only"
            continue
        try:
            quantize_(model, config, filter_fn=lambda m, fqn, target=name: fqn == target)
        except Exception as exc:  # torchao raises assorted errors for unsupported shapes
            report.kept_float[name] = f"Linear: torchao refused it ({type(exc).__name__}: {exc})"
            continue
        report.quantized.append(name)
    return model


def replay_quantize(model: nn.Module, record: dict[str, Any]) -> None:
    """``netslim.load``: fold masks and quantize the recorded layers again, so the rebuilt
    model has the int8 tensors (of the right shapes) that the saved values are copied into."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from netslim.core.masks import make_permanent

    if record.get("mode") != "dynamic":
        raise ArtifactError(f"cannot replay quantization mode {record.get('mode')!r}")
    make_permanent(model)
    layers = set(record.get("layers", []))
    modules = dict(model.named_modules())
    missing = sorted(layers - set(modules))
    if missing:
        raise ArtifactError(f"quantized layers {missing} do not exist in the rebuilt model")
    quantize_(
        model, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, fqn: fqn in layers
    )
