"""save/load: no pickles, exact round trip, clear errors on corrupt or missing files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import netslim
from netslim.errors import ArtifactError, ConfigError
from netslim.io.artifact import MANIFEST, WEIGHTS


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)))


def test_round_trip_is_exact(model_file: Path, tmp_path: Path) -> None:
    model = netslim.build_model(f"py:{model_file}:build", width=12)
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    netslim.save(model, tmp_path / "out")
    loaded = netslim.load(tmp_path / "out", trust_code=True)
    assert torch.equal(_outputs(model), _outputs(loaded))
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["spec"]["kwargs"] == {"width": 12}


@pytest.mark.slow
def test_round_trip_in_fresh_process(model_file: Path, tmp_path: Path) -> None:
    model = netslim.build_model(f"py:{model_file}:build")
    netslim.save(model, tmp_path / "out")
    torch.save(_outputs(model), tmp_path / "expected.pt")
    code = (
        "import torch, netslim;"
        f"m = netslim.load({str(tmp_path / 'out')!r}, trust_code=True);"
        "x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1));"
        f"e = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True);"
        "assert torch.equal(m(x), e)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_save_needs_a_spec(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spec"):
        netslim.save(torch.nn.Linear(2, 2), tmp_path / "out")


def test_missing_directory() -> None:
    with pytest.raises(ArtifactError, match="not a directory"):
        netslim.load("/nonexistent/netslim/dir")


def test_corrupt_weights_are_detected(model_file: Path, tmp_path: Path) -> None:
    netslim.save(netslim.build_model(f"py:{model_file}:build"), tmp_path / "out")
    weights = tmp_path / "out" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        netslim.load(tmp_path / "out", trust_code=True)


def test_corrupt_manifest(model_file: Path, tmp_path: Path) -> None:
    netslim.save(netslim.build_model(f"py:{model_file}:build"), tmp_path / "out")
    (tmp_path / "out" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        netslim.load(tmp_path / "out", trust_code=True)


def test_unknown_history_kind(model_file: Path, tmp_path: Path) -> None:
    netslim.save(netslim.build_model(f"py:{model_file}:build"), tmp_path / "out")
    manifest_path = tmp_path / "out" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["history"] = [{"kind": "teleport"}]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="teleport"):
        netslim.load(tmp_path / "out", trust_code=True)


def test_weights_not_fitting_the_model(model_file: Path, tmp_path: Path) -> None:
    netslim.save(netslim.build_model(f"py:{model_file}:build", width=12), tmp_path / "out")
    manifest_path = tmp_path / "out" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["spec"]["kwargs"] = {"width": 16}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="do not fit"):
        netslim.load(tmp_path / "out", trust_code=True)


def test_tied_weights_save(model_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "tied.py"
    path.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    emb = nn.Embedding(10, 4); head = nn.Linear(4, 10, bias=False)\n"
        "    head.weight = emb.weight\n"
        "    return nn.Sequential(emb, head)\n"
    )
    model = netslim.build_model(f"py:{path}:build")
    netslim.save(model, tmp_path / "out")
    loaded = netslim.load(tmp_path / "out", trust_code=True)
    assert loaded[0].weight is loaded[1].weight
    assert torch.equal(loaded[0].weight, model[0].weight)
