"""``torch.export`` of a pruned model: a self-contained ``.pt2`` program (no Python class needed
to load it), with masks folded and the batch dimension dynamic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def export_program(model: nn.Module, example_inputs: Any, path: str | os.PathLike) -> float:
    """Save the exported program to ``path``; returns max |eager − reloaded program| on the
    example inputs (0.0 expected: same kernels)."""
    from netslim.core.batches import batch_of_two
    from netslim.export.onnx import (
        _first_output,
        _tuple,
        exporter_error,
        reference_output,
        traceable_copy,
    )

    inputs = tuple(batch_of_two(x) for x in _tuple(example_inputs))
    work = traceable_copy(model)
    dims = tuple({0: torch.export.Dim("batch", min=1)} if x.dim() else None for x in inputs)
    try:
        program = torch.export.export(work, inputs, dynamic_shapes=dims)
    except Exception as exc:
        raise exporter_error("torch.export", exc) from exc
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(out))
    del work, program
    expected = torch.from_numpy(reference_output(model, inputs))
    reloaded = torch.export.load(str(out)).module()
    with torch.no_grad():
        got = _first_output(reloaded(*inputs)).float().cpu()
    return float((expected - got).abs().max())
