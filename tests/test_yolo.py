"""Ultralytics YOLO v8 and 11 (detect, segment, pose, classify, OBB), built cold from their yaml
(random weights, no forward run before pruning, nothing downloaded): pruned at 50% channels,
equal to the masked original within 1e-5 of the output's magnitude; a failed prune leaves the
model bit-identical, the head's cached anchors/strides/shape included; the pruned model runs
through ultralytics' own predict and ONNX export and is saved and reloaded by netslim."""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")  # never the network (settings sync, downloads)
ultralytics = pytest.importorskip("ultralytics")

from module_snapshot import differences, has_meta, snapshot  # noqa: E402

import netslim  # noqa: E402
import netslim.structural.apply as apply_mod  # noqa: E402
from netslim.errors import PruningError  # noqa: E402
from netslim.structural import Channels, masked_reference, prune  # noqa: E402
from netslim.structural.trace import flatten_tensors  # noqa: E402

X = (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),)
YAMLS = [f"{v}n{task}.yaml" for v in ("yolov8", "yolo11") for task in ("", "-seg", "-pose", "-cls", "-obb")]  # fmt: skip


def cold(name: str) -> torch.nn.Module:
    """Built from the yaml, never run. BatchNorm statistics and scales are randomised: with
    ultralytics' init (unit statistics, near-zero class biases) the outputs hardly depend on
    the channels, and an equivalence check would be vacuous."""
    torch.manual_seed(0)
    model = ultralytics.YOLO(name).model
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
    return model


def outputs(model: torch.nn.Module, x: tuple) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return [t for t in flatten_tensors(model(*x)) if t.is_floating_point()]


@pytest.mark.parametrize("name", YAMLS)
def test_cold_yolo_prunes_exactly(name):
    model = cold(name)
    original = copy.deepcopy(model)
    before = sum(p.numel() for p in model.parameters())
    plan, _ = prune(model, X, Channels(ratio=0.5))
    assert not has_meta(model)
    after = sum(p.numel() for p in model.parameters())
    assert after < 0.6 * before, (before, after)
    check = (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),)
    got = outputs(model, check)
    want = outputs(masked_reference(original, plan, X), check)
    plain = outputs(original, check)
    assert [t.shape for t in got] == [t.shape for t in want]
    for g, w in zip(got, want, strict=True):  # every output, on its own magnitude
        scale = w.abs().max().item()
        assert (g - w).abs().max().item() <= 1e-5 * scale, (tuple(w.shape), scale)
    # the check can fail: the masked model computes something else than the unpruned one
    assert any((w - p).abs().max() > 1e-2 * w.abs().max() for w, p in zip(want, plain, strict=True))


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n-seg.yaml"])
def test_failed_prune_leaves_cold_yolo_bit_identical(name, monkeypatch):
    model = cold(name)
    before = snapshot(model)

    def failing(analysis, kept, rec, failure):
        raise apply_mod._Invalid("injected after the check forward ran", "model.22")

    monkeypatch.setattr(apply_mod, "_check_shapes", failing)
    with pytest.raises(PruningError, match="injected"):
        prune(model, X, Channels(ratio=0.5))
    assert differences(model, before) == []
    monkeypatch.undo()
    outputs(model, X)  # and it still runs


@pytest.mark.slow
def test_pruned_yolo_predicts_exports_and_reloads(tmp_path, monkeypatch):
    onnxruntime = pytest.importorskip("onnxruntime")
    import numpy as np

    monkeypatch.chdir(tmp_path)  # ultralytics writes its export next to the working directory
    model = netslim.build_model("ultralytics:yolov8n.yaml")
    netslim.prune_(model, Channels(ratio=0.5), example_inputs=X)
    dense = netslim.build_model("ultralytics:yolov8n.yaml")
    assert sum(p.numel() for p in model.parameters()) < 0.6 * sum(
        p.numel() for p in dense.parameters()
    )
    netslim.save(model, tmp_path / "pruned")
    again = netslim.load(tmp_path / "pruned")
    for a, b in zip(outputs(model, X), outputs(again, X), strict=True):
        assert torch.equal(a, b)
    yolo = ultralytics.YOLO("yolov8n.yaml")
    yolo.model = again
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    result = yolo.predict(image, imgsz=64, verbose=False)[0]
    assert result.boxes is not None
    want = outputs(again, X)[0]
    path = yolo.export(format="onnx", imgsz=64, simplify=False, dynamic=False)
    session = onnxruntime.InferenceSession(str(path))
    (got,) = session.run(None, {session.get_inputs()[0].name: X[0].numpy()})[:1]
    assert got.shape == tuple(want.shape)
    assert np.abs(got - want.numpy()).max() <= 1e-3 * float(want.abs().max())


def test_netslim_exports_of_yolo_match_its_eager_output(tmp_path):
    """netslim's own exports (``netslim export``) of a YOLO model, before and after it has run.
    Its detection head caches the anchors and the input shape they were made for on itself in
    its forward. The ONNX check once ran the traced copy afterwards and met the trace's fake
    tensors; torch.export of a model that had run fixed the batch size to the cached one."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from netslim.export import export_onnx, export_program

    model = cold("yolov8n.yaml").eval()  # never run, as netslim.load gives it
    check = (torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)),)
    report = export_onnx(model, X, tmp_path / "m.onnx")  # checked on X, as the CLI does
    want = outputs(model, check)[0]
    scale = float(want.abs().max())
    assert report.max_abs_diff <= 1e-5 * float(outputs(model, X)[0].abs().max())
    session = onnxruntime.InferenceSession(str(report.path))
    got = session.run(None, {session.get_inputs()[0].name: check[0].numpy()})[0]
    assert float(abs(got - want.numpy()).max()) <= 1e-5 * scale  # another batch, in the file
    assert export_program(model, X, tmp_path / "m.pt2") <= 1e-5 * scale  # the model has run
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    with torch.no_grad():
        got = program(*check)[0]
    assert float((got - want).abs().max()) <= 1e-5 * scale  # the batch stayed dynamic
