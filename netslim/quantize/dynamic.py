"""Dynamic int8 (int8 weights, activations quantized per batch at run time) for Linear layers.

Uses torchao's ``quantize_`` with ``Int8DynamicActivationInt8WeightConfig``: in torch 2.14
``torch.ao.quantization`` (eager and FX) is deprecated in favour of torchao, and ``quantize_``
swaps weights in place for int8 tensor subclasses, so the module tree (and any structural
pruning) is kept as is and Hugging Face models work without tracing. It runs eagerly on CPU and
gets faster under ``torch.compile``.
"""

from __future__ import annotations

from torch import nn

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
