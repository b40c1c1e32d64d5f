"""Exports: ONNX parity in onnxruntime, int8 ONNX, torch.export programs, HF save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pruned import weights, zero_fraction
from torch import nn

import netslim
from netslim.errors import UnsupportedModelError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from netslim.export import (  # noqa: E402
    export_onnx,
    export_program,
    max_abs_diff,
    quantize_onnx,
    save_pretrained_pruned,
    sync_config,
)


def _shrunk_vgg() -> nn.Module:
    """vgg_small with half of the first conv's filters removed by hand (what the structural
    engine will do): a plain, smaller nn.Module."""
    torch.manual_seed(0)
    model = netslim.build_model("zoo:vgg_small").eval()
    conv, bn, nxt = model.features[0], model.features[1], model.features[3]
    keep = torch.arange(0, conv.out_channels, 2)
    new_conv = nn.Conv2d(conv.in_channels, len(keep), 3, padding=1, bias=False)
    new_conv.weight.data = conv.weight.data[keep].clone()
    new_bn = nn.BatchNorm2d(len(keep)).eval()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new_bn, name).data = getattr(bn, name).data[keep].clone()
    new_next = nn.Conv2d(len(keep), nxt.out_channels, 3, padding=1, bias=False)
    new_next.weight.data = nxt.weight.data[:, keep].clone()
    model.features[0], model.features[1], model.features[3] = new_conv, new_bn, new_next
    return model


def _masked_lenet() -> nn.Module:
    model = netslim.build_model("zoo:lenet300")
    netslim.prune_(model, netslim.Unstructured(ratio=0.9))
    assert (zeros := zero_fraction(weights(model))) > 0.85, zeros  # the model, not a report
    return model


def _masked_cnn(model_file: Path) -> nn.Module:
    model = netslim.build_model(f"py:{model_file}:build")
    netslim.prune_(model, netslim.Unstructured(ratio=0.7, scope="layer"))
    return model


@pytest.mark.parametrize("which", ["lenet300-masked", "small-cnn-masked", "vgg-hand-shrunk"])
def test_onnx_parity(which: str, model_file: Path, tmp_path: Path) -> None:
    model = {
        "lenet300-masked": _masked_lenet,
        "small-cnn-masked": lambda: _masked_cnn(model_file),
        "vgg-hand-shrunk": _shrunk_vgg,
    }[which]().eval()
    report = export_onnx(
        model,
        torch.randn(2, 1, 28, 28),
        tmp_path / "m.onnx",
        check_inputs=torch.randn(5, 1, 28, 28),
    )
    assert report.max_abs_diff < 1e-4
    assert netslim.unstructured.iter_masks(model) or which == "vgg-hand-shrunk"  # argument intact
    # the file itself against the user's model, in onnxruntime directly (not export's own diff)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = torch.randn(7, 1, 28, 28)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=0, atol=1e-4)


def test_onnx_int8_static_runs_and_is_close(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _masked_lenet().eval()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.weight.data *= 0.3  # keep logits small so the int8 error bound is meaningful
    x = torch.rand(16, 1, 28, 28)
    report = export_onnx(model, x[:2], tmp_path / "m.onnx")
    for mode in ("dynamic", "static"):
        path = quantize_onnx(
            report.path, tmp_path / f"m_{mode}.onnx", mode=mode, calibration=[(x, None)]
        )
        with torch.no_grad():
            scale = model(x).abs().max().item()
        assert max_abs_diff(model, path, (x,)) < 0.1 * scale
        assert path.stat().st_size < report.bytes / 2


def test_torch_export_program(tmp_path: Path) -> None:
    model = _masked_lenet()
    assert export_program(model, torch.randn(3, 1, 28, 28), tmp_path / "m.pt2") == 0.0
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():  # the loaded program against the user's (masked) model
        torch.testing.assert_close(program(x), model(x), rtol=0, atol=1e-6)


class _DataDependent(nn.Module):
    """Branches on its data: no exporter can trace that."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y if int((y > 0).sum()) else -y


def test_an_export_that_fails_says_why_in_one_line(tmp_path: Path) -> None:
    """The root cause's first line, not torch's ONNX step report with colour codes and the
    whole graph."""
    for export, what in ((export_onnx, "ONNX export"), (export_program, "torch.export")):
        with pytest.raises(UnsupportedModelError) as caught:
            export(_DataDependent(), torch.randn(2, 4), tmp_path / "m")
        message = str(caught.value)
        assert message.startswith(f"{what} failed: ") and "data-dependent" in message, message
        assert "\n" not in message and "\x1b" not in message and "step 1/3" not in message


def test_cli_export_takes_the_prune_jobs_example_shape(tmp_path: Path) -> None:
    """A model pruned at another input size than its default exports at that size."""
    from netslim.cli.main import main

    job = tmp_path / "job"
    args = ["--method", "channel", "--ratio", "0.25", "--data", "none", "--no-latency"]
    shape = ["--example-shape", "1,1,20,20"]
    assert main(["prune", "zoo:resnet20", *args, *shape, "--out", str(job)]) == 0
    assert main(["export", str(job)]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(job / "export" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert session.get_inputs()[0].shape[1:] == [1, 20, 20]
    assert main(["export", str(job), "--example-shape", "1,1,24,24", "--out", str(tmp_path)]) == 0
    session = onnxruntime.InferenceSession(
        str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert session.get_inputs()[0].shape[1:] == [1, 24, 24]


transformers = pytest.importorskip("transformers")
from tiny_hf import tiny_bert  # noqa: E402


def _tiny_bert_shrunk(width: int) -> nn.Module:
    """A tiny BERT whose MLPs were narrowed by hand (the config still says 64)."""
    model = tiny_bert(max_position_embeddings=32)
    for index, layer in enumerate(model.encoder.layer):
        keep = torch.arange(width + (index if width < 0 else 0))
        inter, out = layer.intermediate.dense, layer.output.dense
        new_inter, new_out = nn.Linear(32, len(keep)), nn.Linear(len(keep), 32)
        new_inter.weight.data, new_inter.bias.data = inter.weight.data[keep], inter.bias.data[keep]
        new_out.weight.data, new_out.bias.data = out.weight.data[:, keep], out.bias.data.clone()
        layer.intermediate.dense, layer.output.dense = new_inter, new_out
    return model


def test_hf_save_pretrained_roundtrip(tmp_path: Path) -> None:
    model = _tiny_bert_shrunk(40)
    changes = save_pretrained_pruned(model, tmp_path / "hf")
    assert changes == {"intermediate_size": [64, 40]}
    loaded = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)
    assert loaded.config.intermediate_size == 40


def test_hf_save_pretrained_deletes_bypassed_layers(tmp_path: Path) -> None:
    """Layers a latency plan bypassed (``Channels(blocks=True)``) leave the saved model: the
    config counts the layers that run and stock ``from_pretrained`` computes what the pruned
    model does (before, the save failed: the config built tensors the model lacked)."""
    from netslim.core.blocks import BypassedBlock
    from netslim.structural.latency_blocks import bypass

    model = tiny_bert(max_position_embeddings=32, num_hidden_layers=4)
    bypass(model, ["encoder.layer.1", "encoder.layer.2"])
    changes = save_pretrained_pruned(model, tmp_path / "hf")
    assert changes == {"num_hidden_layers": [4, 2]}
    assert sum(isinstance(m, BypassedBlock) for m in model.modules()) == 2  # model untouched
    loaded = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert loaded.config.num_hidden_layers == 2 and len(loaded.encoder.layer) == 2
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


def test_hf_save_with_per_layer_widths_records_the_deleted_layers(tmp_path: Path) -> None:
    """Per-layer widths take the shaped path; its record also says how many layers the saved
    copy has once the bypassed ones are gone."""
    from netslim.structural.latency_blocks import bypass

    model = tiny_bert(max_position_embeddings=32, num_hidden_layers=3)
    for index, width in ((0, 30), (2, 40)):  # the config cannot say both
        layer = model.encoder.layer[index]
        layer.intermediate.dense, layer.output.dense = nn.Linear(32, width), nn.Linear(width, 32)
    bypass(model, ["encoder.layer.1"])
    record = save_pretrained_pruned(model, tmp_path / "hf")
    assert record["num_hidden_layers"] == [3, 2] and "netslim_shapes" in record
    assert record["load"].startswith("model type netslim_bert: import netslim.export.hf_shapes")
    loaded = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


def test_cli_export_hf_writes_a_from_pretrained_folder(tmp_path: Path, capsys) -> None:
    """``netslim export DIR --hf``: a pruned Hugging Face model as a save_pretrained folder
    that from_pretrained loads to the same outputs; a model that is not one is refused with
    one line and exit 2, before anything is written."""
    from netslim.cli.main import main

    tiny_bert(max_position_embeddings=32).save_pretrained(tmp_path / "bert")
    job = tmp_path / "job"
    args = ["--method", "channel", "--ratio", "0.5", "--data", "none", "--no-latency"]
    assert main(["prune", f"hf:{tmp_path / 'bert'}", *args, "--out", str(job)]) == 0
    assert main(["export", str(job), "--hf"]) == 0
    pruned = netslim.load(job / "model").eval()
    loaded = transformers.AutoModel.from_pretrained(job / "export" / "hf").eval()
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, pruned(ids).last_hidden_state)
    lenet = tmp_path / "lenet"
    assert main(["prune", "zoo:lenet300", *args, "--out", str(lenet)]) == 0
    capsys.readouterr()
    assert main(["export", str(lenet), "--hf"]) == 2
    err = capsys.readouterr().err
    assert "--hf writes Hugging Face models" in err and len(err.strip().splitlines()) == 1
    assert not (lenet / "export").exists()


def test_hf_non_uniform_widths_are_refused(tmp_path: Path) -> None:
    model = _tiny_bert_shrunk(40)
    layer = model.encoder.layer[1]
    layer.intermediate.dense = nn.Linear(32, 30)
    layer.output.dense = nn.Linear(30, 32)
    with pytest.raises(UnsupportedModelError, match="intermediate_size differs"):
        sync_config(model)
    assert model.config.intermediate_size == 64  # untouched on failure
    with pytest.raises(UnsupportedModelError, match="not a Hugging Face model"):
        sync_config(nn.Linear(2, 2))


def test_onnx_export_keeps_onnxscripts_folding_log_out_of_the_output(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """The exporter's constant folding logs each node it could not fold at WARNING ("Evaluation
    failed: cannot reshape ...", seen exporting a pruned MiniLM), the export unharmed: held back
    while netslim exports, and the logger's level restored after."""
    import logging

    real = torch.onnx.export
    folding = logging.getLogger("onnxscript.optimizer._constant_folding")

    def export(*args, **kwargs):
        folding.warning("Evaluation failed: %s", "cannot reshape array of size 1 into shape (1,7)")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with caplog.at_level(logging.WARNING):
        export_onnx(model, (torch.randn(2, 4),), tmp_path / "m.onnx")
    assert not [r for r in caplog.records if r.name.startswith("onnxscript")]
    assert logging.getLogger("onnxscript").level == logging.NOTSET
