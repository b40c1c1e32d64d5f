"""``quantize_int8``: post-training int8 for CPU, after pruning, in one call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from netslim._runtime import PYTREE_LOG, quiet_log
from netslim.core import history
from netslim.core.config import choice
from netslim.errors import ConfigError, UnsupportedModelError
from netslim.quantize import dynamic, static
from netslim.quantize.report import QuantizeReport

MODES = ("auto", "dynamic", "static", "qat")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _torchao() -> None:
    try:
        with quiet_log(PYTREE_LOG):  # its import logs a deprecation (PYTREE_LOG)
            import torchao  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedModelError(
            "int8 quantization needs torchao: pip install netslim[export]"
        ) from exc


def resolve_mode(model: nn.Module, mode: str) -> str:
    """``auto``: static (calibrated) for models with convolutions, dynamic for Linear-only ones."""
    choice("quantization mode", mode, MODES)
    if mode != "auto":
        return mode
    return "static" if any(isinstance(m, _CONVS) for m in model.modules()) else "dynamic"


def quantize_int8(
    model: nn.Module,
    *,
    mode: str = "auto",
    example_inputs: Any = None,
    calibration: Iterable[Any] | None = None,
    calibration_batches: int = 8,
    train_loader: Iterable[Any] | None = None,
    qat_epochs: int = 1,
    qat_lr: float = 1e-4,
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, QuantizeReport]:
    """An int8 copy of ``model`` (the argument is left untouched) and a per-layer report.

    Masks are folded into the weights first (pruned zeros quantize to exact zeros) and physical
    shapes are kept. ``dynamic``: Linear layers, no data needed. ``static``: convs and linears,
    calibrated on ``calibration`` batches (``(inputs, labels)`` or inputs). ``qat``: static with
    ``qat_epochs`` of quantization-aware fine-tuning on ``train_loader``. Layers the backend
    cannot quantize stay float and are listed in ``report.kept_float`` (with a warning).
    """
    from netslim.core.masks import folded_copy

    _torchao()
    mode = resolve_mode(model, mode)
    work, folded = folded_copy(model)
    work.eval()
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if mode in ("static", "qat") and example_inputs is None:
        raise ConfigError(f"{mode} quantization traces the model: pass example_inputs")
    if mode == "qat" and train_loader is None:
        raise ConfigError("qat quantization fine-tunes: pass train_loader")

    backend = dynamic.BACKEND if mode == "dynamic" else static.BACKEND
    report = QuantizeReport(mode=mode, backend=backend, masks_folded=folded)
    if mode == "dynamic":
        out = dynamic.quantize_dynamic_(work, report)
    else:
        try:
            if mode == "static":
                out = static.quantize_static(
                    work, tuple(example_inputs), calibration, report, batches=calibration_batches
                )
            else:
                out = static.quantize_qat(
                    work, tuple(example_inputs), train_loader, report,
                    epochs=qat_epochs, lr=qat_lr, teacher=teacher,
                )  # fmt: skip
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError, RuntimeError) as exc:
            # A model torch.export cannot capture still gets int8 Linear layers.
            report = QuantizeReport(mode="dynamic", backend=dynamic.BACKEND, masks_folded=folded)
            report.notes.append(
                f"{mode} needs torch.export, which failed ({exc!s:.200}); fell back to dynamic"
            )
            out = dynamic.quantize_dynamic_(work, report)
    report.warn_kept_float()
    out.eval()  # not chained: the exported module's patched eval() returns None
    if report.mode == "dynamic":  # eager modules: netslim.save can store and replay them
        history.record(out, "quantize", {"mode": "dynamic", "layers": list(report.quantized)})
    return out, report
