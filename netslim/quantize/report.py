"""What a quantization pass did, per layer, as a JSON-ready record."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from netslim.errors import NetslimWarning

# Modules that carry a weight an int8 kernel could use; norms are folded or stay float by design.
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Embedding)


class QuantizationWarning(NetslimWarning):
    """Some layers were left in float; the report says which and why."""


@dataclass
class QuantizeReport:
    mode: str
    backend: str
    quantized: list[str] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)
    masks_folded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warn_kept_float(self) -> None:
        if self.kept_float:
            listed = "; ".join(f"{k}: {v}" for k, v in self.kept_float.items())
            warnings.warn(f"kept in float: {listed}", QuantizationWarning, stacklevel=3)


def weighted_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, WEIGHTED)}
