"""The probe behind docs/latency.md's item *ONNX Runtime's thread pool* (not a bench part):
paired time ratios of a torchvision model to its own copy on ONNX Runtime, 2 threads, batch 1,
with the sessions' workers spinning after a run (``1``) or not (``0``, netslim's setting), and
the median time of the model alone. Run alone:
``python bench/_ort_spin_probe.py 1 mobilenet_v2`` then ``... 0 mobilenet_v2``."""

from __future__ import annotations

import copy
import sys

import torch
import torchvision

import netslim.export.onnx as onnx_export
import netslim.structural.op_timing as op_timing
from netslim.structural.op_timing import Target, model_ms, time_ratio


def main() -> None:
    spin, name = sys.argv[1], sys.argv[2]

    def session(model, threads: int = 1):
        sess = base_session(model, threads)  # netslim's options, then the spin setting swapped
        options = sess.get_session_options()
        options.add_session_config_entry(onnx_export.SPIN_CONFIG, spin)
        ort = onnx_export.require_onnxruntime()
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    base_session = onnx_export.session
    op_timing.session = session
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    twin = copy.deepcopy(model)
    x = torch.randn(1, 3, 224, 224)
    target = Target("onnxruntime", 2, 1)
    ratios = [time_ratio(twin, model, (x,), target) for _ in range(8)]
    times = [model_ms(model, (x,), target, samples=5) for _ in range(5)]
    print(
        f"spin={spin} {name} ratios {[round(r, 3) for r in ratios]} ms {[round(t, 2) for t in times]}"
    )


if __name__ == "__main__":
    main()
