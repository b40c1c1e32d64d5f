"""ONNX export of (pruned) models with a parity check in onnxruntime.

Masks are folded first, so the graph holds plain weights: unstructured zeros are just zeros and a
structurally pruned model is exported with its smaller shapes. The exporter is
``torch.onnx.export(dynamo=True)`` (the ``torch.export``-based one, default since torch 2.9);
the batch dimension stays dynamic.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netslim._runtime import ONNXSCRIPT_LOG, quiet_log
from netslim.errors import UnsupportedModelError


@dataclass
class OnnxReport:
    path: str
    bytes: int
    max_abs_diff: float | None
    reference: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tuple(example_inputs: Any) -> tuple[Any, ...]:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def require_onnxruntime():
    """The ``onnxruntime`` module, or the one error every ONNX Runtime path gives without it
    (callers check before any work starts)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise UnsupportedModelError(
            "onnxruntime is not installed: pip install netslim[export]"
        ) from exc
    return onnxruntime


SPIN_CONFIG = "session.intra_op.allow_spinning"


def session(model: str | os.PathLike | bytes, threads: int = 1):
    """An onnxruntime CPU session of ``model`` (a path, or a serialized model's bytes) with
    ``threads`` intra-op threads and one inter-op thread: latency depends on them.

    Worker threads do not spin after a run. netslim times sessions side by side (a pruned
    model paired with its dense one, a table's layers one after another), and a spinning
    worker of the session that has just finished takes a core from the one running: with 2
    threads on 2 cores, paired ratios of a model to its own copy spread over 0.69-1.46 with
    spinning and 1.013-1.016 without (docs/latency.md). Without spinning, a session alone runs
    a few percent slower: the times netslim predicts and measures are of that setting."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry(SPIN_CONFIG, "0")
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(sess, inputs: tuple[Any, ...]) -> list[np.ndarray]:
    feeds = {
        i.name: np.asarray(x.detach().cpu()) for i, x in zip(sess.get_inputs(), inputs, strict=True)
    }
    return sess.run(None, feeds)


def _first_output(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return _first_output(output[0])
    if isinstance(output, dict):
        return _first_output(next(iter(output.values())))
    raise UnsupportedModelError(f"cannot compare a model output of type {type(output).__name__}")


def eager_output(model: nn.Module, inputs: tuple[Any, ...]) -> np.ndarray:
    """The model's first output on ``inputs``, as float32 numpy."""
    with torch.no_grad():
        return _first_output(model(*inputs)).detach().float().cpu().numpy()


def traceable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to trace: masks folded, eval mode, and model families' own export
    switches set.

    Ultralytics' detection heads cache their anchors with the input shape they were made for,
    batch included. A copy of a model that has already run compares the traced (symbolic)
    batch with that shape, and the trace fixes the batch size. Ultralytics' own exporter sets
    the heads' ``dynamic`` for a dynamic batch (anchors rebuilt in the graph); so does this."""
    work = _eval_copy(model)
    for module in work.modules():
        is_ultralytics = type(module).__module__.startswith("ultralytics.")
        if is_ultralytics and hasattr(module, "anchors") and hasattr(module, "dynamic"):
            module.dynamic = True
    return work


def reference_output(model: nn.Module, inputs: tuple[Any, ...]) -> np.ndarray:
    """What an exported copy of ``model`` is checked against: the eager output of a copy of its
    own (masks folded, eval mode), run neither before nor after the exporter's trace.

    A model may cache tensors on itself in its forward (YOLO's detection head keeps its anchors
    and the shape they were made for). Run eagerly before the trace, the cache makes the trace
    specialise the batch size; run on the traced copy after it, the cache holds the trace's
    fake tensors."""
    return eager_output(_eval_copy(model), inputs)


def _eval_copy(model: nn.Module) -> nn.Module:
    from netslim.core.masks import folded_copy

    copy, _ = folded_copy(model)
    return copy.eval()


def exporter_error(what: str, exc: Exception) -> UnsupportedModelError:
    """One readable line for an exporter's failure: the first line of its root cause (torch's
    ONNX exporter wraps torch.export's error in a report of its own steps, with terminal colour
    codes and the whole graph)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip()
    first = text.splitlines()[0] if text else ""
    return UnsupportedModelError(f"{what} failed: {type(root).__name__}: {first:.300}")


def max_abs_diff(model: nn.Module, path: str | os.PathLike, inputs: tuple[Any, ...]) -> float:
    """Largest |torch − onnxruntime| over the first output, on ``inputs``."""
    return _diff_to_onnx(eager_output(model, inputs), path, inputs)


def _diff_to_onnx(expected: np.ndarray, path: str | os.PathLike, inputs: tuple[Any, ...]) -> float:
    got = run_onnx(session(path), inputs)[0]
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got.astype(np.float32) - expected).max())


def export_onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    check_inputs: Any = None,
    opset: int | None = None,
) -> OnnxReport:
    """Export ``model`` (masks folded, the argument untouched) and check it in onnxruntime.

    ``check_inputs`` (default: ``example_inputs``) may use another batch size, which also checks
    that the batch dimension stayed dynamic.
    """
    inputs = _tuple(example_inputs)
    work = traceable_copy(model)
    dims = tuple({0: torch.export.Dim.AUTO} if x.dim() else None for x in inputs)
    check = _tuple(check_inputs) if check_inputs is not None else inputs
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"dynamo": True, "dynamic_shapes": dims, "verbose": False}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        with contextlib.redirect_stdout(io.StringIO()), quiet_log(ONNXSCRIPT_LOG), torch.no_grad():
            program = torch.onnx.export(work, inputs, **kwargs)
    except Exception as exc:
        raise exporter_error("ONNX export", exc) from exc
    program.save(str(out))
    del work, program
    diff = _diff_to_onnx(reference_output(model, check), out, check)
    return OnnxReport(
        path=str(out), bytes=out.stat().st_size, max_abs_diff=diff, reference="torch fp32"
    )
