"""What a saved artifact may do to the machine that opens it, and what a save leaves behind:
no code runs without consent, a killed save keeps the previous result, your own weights come in
without pickles, sparse models are small on disk and sparse after reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import netslim
from netslim.errors import ConfigError, UntrustedCodeError
from netslim.io.artifact import MANIFEST, WEIGHTS
from netslim.models.weights import load_weights
from netslim.unstructured.method import fold_masks

MARKER_MODEL = textwrap.dedent(
    """
    from pathlib import Path
    from torch import nn
    Path(__file__).with_suffix(".ran").write_text("imported")

    def build():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    """
)


def _artifact_naming_code(tmp_path: Path) -> tuple[Path, Path]:
    """A saved zoo model whose manifest was edited to name a Python file (as a sender could)."""
    code = tmp_path / "evil.py"
    code.write_text(MARKER_MODEL)
    netslim.save(netslim.build_model("zoo:lenet300"), tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / MANIFEST).read_text())
    manifest["spec"] = {"source": f"py:{code}:build", "kwargs": {}}
    (tmp_path / "art" / MANIFEST).write_text(json.dumps(manifest))
    return tmp_path / "art", code.with_suffix(".ran")


def test_load_refuses_code_without_consent_and_runs_nothing(tmp_path: Path) -> None:
    art, marker = _artifact_naming_code(tmp_path)
    with pytest.raises(UntrustedCodeError, match="evil.py") as info:
        netslim.load(art)
    assert "--trust-code" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()  # the file was not imported
    with pytest.raises(netslim.NetslimError):  # with consent it runs (and then does not fit)
        netslim.load(art, trust_code=True)
    assert marker.exists()


def test_compressed_artifact_refuses_code_without_consent(tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    from netslim.compress import compress, decompress

    code = tmp_path / "evil.py"
    code.write_text(MARKER_MODEL)
    model = netslim.build_model(f"py:{code}:build")
    code.with_suffix(".ran").unlink()
    compress(model, tmp_path / "m.nsz", values="exact")
    with pytest.raises(UntrustedCodeError, match="evil.py"):
        decompress(tmp_path / "m.nsz")
    assert not code.with_suffix(".ran").exists()
    loaded = decompress(tmp_path / "m.nsz", trust_code=True)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))


def test_hugging_face_remote_code_is_never_passed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trust_remote_code"):
        netslim.build_model(f"hf:{tmp_path}", trust_remote_code=True)


def test_eval_command_needs_trust_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from netslim.cli.main import main

    art, marker = _artifact_naming_code(tmp_path)
    assert main(["eval", str(art), "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "evil.py" in err and "--trust-code" in err
    assert not marker.exists()


_KILLED_SAVE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import netslim, netslim.io.artifact as artifact
    real = artifact.save_file
    def slow(tensors, path):
        real(tensors, path)
        Path(sys.argv[2]).write_text("writing")
        time.sleep(60)
    artifact.save_file = slow
    model = netslim.build_model("zoo:lenet300")
    netslim.prune_(model, netslim.Unstructured(ratio=0.5))
    netslim.save(model, sys.argv[1])
    """
)


def test_save_killed_midway_keeps_the_previous_result(tmp_path: Path) -> None:
    before = netslim.build_model("zoo:lenet300")
    netslim.save(before, tmp_path / "out")
    files = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(tmp_path / "out"), str(ready)],
        env={**os.environ, "PYTHONPATH": str(Path(netslim.__file__).parents[1])},
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the child never reached the middle of its save"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == files
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(netslim.load(tmp_path / "out")(x), before.eval()(x))
    netslim.save(before, tmp_path / "out")  # the next save clears the killed writer's staging
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ready"]


def test_saved_sparse_lenet300_is_small_and_reloads_sparse(tmp_path: Path) -> None:
    """#22 bar: 90% unstructured LeNet-300-100 saved <= 0.2x the dense file, 90% zeros after."""
    model = netslim.build_model("zoo:lenet300")
    netslim.save(model, tmp_path / "dense")
    report = netslim.prune_(model, netslim.Unstructured(ratio=0.9))
    fold_masks(model)
    netslim.save(model, tmp_path / "sparse")
    dense = (tmp_path / "dense" / WEIGHTS).stat().st_size
    sparse = (tmp_path / "sparse" / WEIGHTS).stat().st_size
    assert sparse <= 0.2 * dense, (sparse, dense)
    loaded = dict(netslim.load(tmp_path / "sparse").named_parameters())
    pruned = [loaded[key] for key in report["layers"]]  # the classifier is left dense by default
    zeros = sum(int((p == 0).sum()) for p in pruned) / sum(p.numel() for p in pruned)
    assert zeros == pytest.approx(0.9, abs=1e-4)
    assert sum(int((p == 0).sum()) for p in pruned) == report["pruned"]
    loaded = netslim.load(tmp_path / "sparse")
    assert all(type(p) is torch.nn.Parameter for p in loaded.parameters())  # no masks left
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_own_weights_load_without_pickles(tmp_path: Path, suffix: str) -> None:
    trained = netslim.build_model("zoo:lenet5")
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": trained.state_dict()}, path)
    else:
        from safetensors.torch import save_file

        save_file(trained.state_dict(), str(path))
    fresh = load_weights(netslim.build_model("zoo:lenet5"), path)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(fresh.eval()(x), trained.eval()(x))


def test_own_weights_refuse_pickled_code_and_wrong_keys(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    torch.save({"x": Boom()}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="weights_only"):
        load_weights(netslim.build_model("zoo:lenet5"), tmp_path / "bad.pt")
    assert not (tmp_path / "ran").exists()
    torch.save(netslim.build_model("zoo:lenet300").state_dict(), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="does not fit") as info:
        load_weights(netslim.build_model("zoo:lenet5"), tmp_path / "other.pt")
    assert "\n" not in str(info.value)


def test_exported_program_has_a_dynamic_batch(tmp_path: Path) -> None:
    from netslim.export import export_program

    model = netslim.build_model("zoo:vgg_small").eval()
    export_program(model, (torch.randn(1, 1, 28, 28),), tmp_path / "m.pt2")
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    for batch in (1, 4):
        x = torch.randn(batch, 1, 28, 28)
        torch.testing.assert_close(program(x), model(x))


def test_recipe_naming_code_needs_trust_code(tmp_path: Path, capsys) -> None:
    pytest.importorskip("yaml")
    from netslim.cli.main import main

    code = tmp_path / "evil.py"
    code.write_text(MARKER_MODEL)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: py:{code}:build\ndata: synthetic\nout: {tmp_path / 'out'}\n"
        "steps:\n  - prune: {method: unstructured, ratio: 0.5}\n"
    )
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert "evil.py" in err and "--trust-code" in err and "\n" not in err
    assert not code.with_suffix(".ran").exists() and not (tmp_path / "out").exists()
