"""Parameter counts: total and non-zero, both of the effective (masked) tensors."""

from __future__ import annotations

from torch import nn

from netslim.measure.effective import effective_named_parameters


def count_params(model: nn.Module) -> int:
    """Number of parameter entries; masking does not change it, removing channels does."""
    return sum(t.numel() for _, t in effective_named_parameters(model))


def count_nonzero_params(model: nn.Module) -> int:
    """Number of non-zero parameter entries, with masked entries counted as zero."""
    return sum(int(t.count_nonzero()) for _, t in effective_named_parameters(model))


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every Linear / Conv layer: what structural pruning changes, per layer."""
    widths: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            widths[name] = module.out_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = module.out_channels
    return widths
