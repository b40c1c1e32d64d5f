"""int8 quantization of pruned models: runs, keeps masks' zeros, accuracy close, float fallback."""

from __future__ import annotations

import pytest
import torch
from pruned import param_count, weights, zero_fraction
from torch import nn

import netslim
from netslim.data import make_loaders
from netslim.errors import ConfigError
from netslim.quantize import QuantizationWarning, quantize_int8, resolve_mode
from netslim.training import evaluate, seed_everything, train

pytest.importorskip("torchao")


@pytest.fixture(scope="module")
def loaders():
    return make_loaders("synthetic", batch_size=64, limit_train=1024, limit_test=512, seed=0)


def _trained(spec: str, loaders, epochs: int = 2) -> nn.Module:
    seed_everything(0)
    model = netslim.build_model(spec)
    train(model, loaders[0], epochs=epochs, lr=3e-3, progress=False)
    return model


def test_dynamic_int8_pruned_mlp_is_close(loaders) -> None:
    model = _trained("zoo:lenet300", loaders)
    netslim.prune_(model, netslim.Unstructured(ratio=0.8))
    quantized, report = quantize_int8(model)
    assert report.mode == "dynamic" and report.quantized == ["1", "3", "5"]
    assert report.masks_folded == ["1.weight", "3.weight"] and not report.kept_float
    assert netslim.unstructured.iter_masks(model)  # the argument keeps its masks
    dense_acc, int8_acc = evaluate(model, loaders[1]), evaluate(quantized, loaders[1])
    assert dense_acc > 0.5 and abs(dense_acc - int8_acc) < 0.03


def test_static_int8_pruned_cnn_is_close(loaders) -> None:
    model = _trained("zoo:lenet5", loaders)
    netslim.prune_(model, netslim.Unstructured(ratio=0.5))
    assert (zeros := zero_fraction(weights(model))) > 0.45, zeros
    example = (torch.randn(2, 1, 28, 28),)
    quantized, report = quantize_int8(model, example_inputs=example, calibration=loaders[0])
    assert report.mode == "static" and len(report.quantized) == 5 and not report.kept_float
    dense_acc, int8_acc = evaluate(model, loaders[1]), evaluate(quantized, loaders[1])
    assert dense_acc > 0.5 and abs(dense_acc - int8_acc) < 0.03
    with torch.no_grad():  # batch size other than the example's
        assert quantized(torch.randn(7, 1, 28, 28)).shape == (7, 10)


def test_static_int8_of_a_module_called_twice_and_a_batch_of_one() -> None:
    """torchvision's ResNet blocks call one ``relu`` twice: the quantizer once raised "Input
    partition has more than one output node". An example batch of one once fixed the
    quantized model's batch size to one (torch.export's 0/1 rule)."""
    torch.manual_seed(0)
    model = netslim.build_model("torchvision:resnet18").eval()
    example = (torch.randn(1, 3, 32, 32),)
    calibration = [(torch.randn(4, 3, 32, 32),) for _ in range(3)]
    quantized, report = quantize_int8(model, example_inputs=example, calibration=calibration)
    assert report.mode == "static" and len(report.quantized) == 21 and not report.kept_float
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want, got = model(x), quantized(x)
    assert float((got - want).norm() / want.norm()) < 0.05


class _WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, ids):
        return self.head(self.conv(self.embed(ids).transpose(1, 2)).mean(-1))


def test_unsupported_layers_stay_float_and_are_named() -> None:
    model = _WithEmbedding().eval()
    with pytest.warns(QuantizationWarning, match="embed"):
        quantized, report = quantize_int8(model, mode="dynamic")
    assert report.quantized == ["head"]
    assert set(report.kept_float) == {"embed", "conv"}
    ids = torch.randint(0, 20, (3, 5))
    assert quantized(ids).shape == (3, 4)


def test_mode_checks() -> None:
    assert resolve_mode(netslim.build_model("zoo:lenet300"), "auto") == "dynamic"
    assert resolve_mode(netslim.build_model("zoo:lenet5"), "auto") == "static"
    with pytest.raises(ConfigError, match="mode"):
        resolve_mode(nn.Linear(2, 2), "int4")
    with pytest.raises(ConfigError, match="example_inputs"):
        quantize_int8(netslim.build_model("zoo:lenet5"))
    with pytest.raises(ConfigError, match="train_loader"):
        quantize_int8(
            netslim.build_model("zoo:lenet5"), mode="qat", example_inputs=torch.zeros(1, 1, 28, 28)
        )


@pytest.mark.slow
def test_qat_runs(loaders) -> None:
    model = _trained("zoo:lenet5", loaders, epochs=1)
    quantized, report = quantize_int8(
        model,
        mode="qat",
        example_inputs=torch.randn(2, 1, 28, 28),
        train_loader=loaders[0],
        qat_epochs=1,
    )
    assert report.mode == "qat" and any("quantization-aware" in n for n in report.notes)
    assert evaluate(quantized, loaders[1]) > 0.3


def test_dynamic_int8_saves_and_reloads_exactly(tmp_path) -> None:
    """Masks + channel pruning + dynamic int8: ``netslim.save`` stores the int8 values and
    scales themselves; ``load`` replays the history and gives the same outputs bit for bit."""
    from netslim.structural import Channels
    from netslim.unstructured import Unstructured

    model = netslim.build_model("zoo:lenet300").eval()
    x = torch.randn(4, 1, 28, 28)
    dense = param_count(model)
    netslim.prune_(model, Channels(ratio=0.25), example_inputs=(x,))
    assert param_count(model) < 0.8 * dense
    netslim.prune_(model, Unstructured(ratio=0.5))
    quantized, report = quantize_int8(model, mode="dynamic")
    netslim.save(quantized, tmp_path)
    reloaded = netslim.load(tmp_path)
    assert type(reloaded[1].weight).__name__ == type(quantized[1].weight).__name__ != "Parameter"
    with torch.no_grad():
        assert torch.equal(reloaded(x), quantized(x))
    assert len(report.quantized) == 3
    int8 = [m.weight.qdata for m in reloaded.modules() if hasattr(m, "weight")]
    assert len(int8) == 3
    assert (zeros := zero_fraction(int8)) > 0.45, zeros  # masks kept


def test_static_int8_graph_save_says_how_to_deploy(tmp_path) -> None:
    model = netslim.build_model("zoo:lenet5").eval()
    x = torch.randn(2, 1, 28, 28)
    quantized, _ = quantize_int8(model, mode="static", example_inputs=(x,), calibration=[x])
    with pytest.raises(ConfigError, match="ONNX"):
        netslim.save(quantized, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_importing_torchao_prints_nothing() -> None:
    """torch logs a deprecation when torchao registers its enums on import: quantizing must
    not put that line in a job's output (a fresh process: the import happens once)."""
    import subprocess
    import sys

    code = "from netslim.quantize.api import _torchao; _torchao(); import torchao.quantization"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == "" and done.stdout == ""
