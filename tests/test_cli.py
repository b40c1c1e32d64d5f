"""The command line: help everywhere, one clear line and exit 2 on bad input, a full job end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FastJob
from pruned import zero_fraction

from netslim.cli.main import main

FAST = FastJob().flags()


@pytest.mark.parametrize("command", [[], ["prune"], ["eval"], ["demo"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: netslim" in capsys.readouterr().out


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "netslim", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "prune" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["zoo:lenet300", "--ratio", "1.0"], "ratio"),
        (["zoo:lenet300", "--ratio", "-0.1"], "ratio"),
        (["zoo:lenet300", "--method", "magic"], "unknown method"),
        (["zoo:lenet300", "--criterion", "astrology"], "astrology"),
        (["zoo:nosuchnet"], "nosuchnet"),
        (["nosuchscheme:x"], "unknown model spec"),
        (["zoo:lenet300", "--nm", "4:2"], "4"),
        (["zoo:lenet300", "--nm", "two:four"], "2:4"),
        (["zoo:lenet300", "--schedule", "sometimes"], "schedule"),
        (["zoo:lenet300", "--data", "/no/such/dir"], "/no/such/dir"),
        (["zoo:lenet5", "--method", "channel", "--target-latency", "-1"], "--target-latency"),
        (
            ["zoo:lenet5", "--method", "channel", "--target-latency", "1", "--target-macs", "0.5"],
            "not target_macs and target_latency_ms",
        ),
    ],
)
def test_bad_prune_input(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["prune", *FAST, *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("netslim: error:") and "\n" not in err
    assert message in err
    assert not out.exists(), "a failed job must not leave files behind"


@pytest.mark.parametrize("command", ["prune", "lottery", "sensitivity"])
def test_a_missing_model_is_named_before_the_data_it_lacks(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in a py: file or an hf: directory is the error, not "no default data set"."""
    out = tmp_path / "out"
    for spec, message in (
        (f"py:{tmp_path / 'nothere.py'}:build", "does not exist"),
        (f"hf:{tmp_path / 'nothere'}", "no config.json"),
    ):
        assert main([command, spec, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not out.exists()


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("nn.Linear(32, 3)", "has 10 classes, and py:"),
        ("_AsDict(nn.Linear(32, 10))", "holds no classifier logits"),
    ],
)
def test_data_for_a_model_that_is_no_classifier_for_it_is_refused_before_training(
    head: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """netslim's training and accuracy read one logit per class: a head too small for the
    data's classes, or an output with no logits, is one line before any training."""
    source = tmp_path / "net.py"
    source.write_text(
        "from torch import nn\n\n"
        "class _AsDict(nn.Module):\n"
        "    def __init__(self, inner):\n        super().__init__()\n        self.inner = inner\n"
        "    def forward(self, x):\n        return {'scores': self.inner(x)}\n\n"
        f"def build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), {head})\n"
    )
    out = tmp_path / "out"
    argv = ["prune", f"py:{source}:build", "--data", "synthetic", "--limit-train", "64"]
    assert main([*argv, "--limit-test", "64", "--no-latency", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()


def test_a_result_to_look_at_twice_is_one_warning_line_and_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A MACs target out of reach still prunes (as far as the groups allow) and says so: one
    ``netslim: warning:`` line, not Python's file-and-source form, listed in report.json."""
    out = tmp_path / "out"
    argv = ["prune", "zoo:lenet300", "--method", "channel", "--target-macs", "0.001"]
    assert main([*argv, "--data", "none", "--no-latency", "--no-progress", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "unreachable" in line]
    prefix = "netslim: warning: the target of 0.001 of the MACs is unreachable"
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "UserWarning" not in err and "engine.py" not in err
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert warnings == [lines[0].removeprefix("netslim: warning: ")]


def test_eval_of_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "holds no netslim model" in capsys.readouterr().err
    (tmp_path / "netslim_llm.json").write_text("{}")  # what netslim llm writes beside its model
    for command in ("eval", "export", "compress"):
        assert main([command, str(tmp_path)]) == 2
        assert "is a netslim llm result" in capsys.readouterr().err


@pytest.mark.slow
def test_prune_job_end_to_end_then_eval_in_fresh_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "job"
    code = main(["prune", "zoo:lenet300", "--ratio", "0.8", *FAST, "--out", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "non-zero params" in table
    report = json.loads((out / "report.json").read_text())
    for key in ("params", "nonzero_params", "macs", "size_bytes", "accuracy"):
        assert report[f"{key}_before"] is not None and report[f"{key}_after"] is not None
    assert report["params_after"] == report["params_before"]
    assert report["nonzero_params_after"] < 0.3 * report["nonzero_params_before"]
    assert report["settings"]["ratio"] == 0.8
    assert (out / "report.png").stat().st_size > 0
    result = subprocess.run(
        [sys.executable, "-m", "netslim", "eval", str(out), "--no-latency"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    measured, _ = json.JSONDecoder().raw_decode(result.stdout)
    assert measured["nonzero_params"] == report["nonzero_params_after"]
    assert abs(measured["accuracy"] - report["accuracy_after"]) < 1e-9


@pytest.mark.slow
def test_prune_with_quantize_int8_writes_torch_and_onnx_int8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--quantize int8`` on a Linear-only model: dynamic int8, saved as a reloadable netslim
    directory beside the ONNX int8 file; the reloaded model scores what the job reported, the
    printed table shows that accuracy and the last line names the files written."""
    import torch

    import netslim

    out = tmp_path / "job"
    assert main(["prune", "zoo:lenet300", *FAST, "--quantize", "int8", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    printed = capsys.readouterr().out.splitlines()
    int8 = 100 * report["quantize"]["accuracy_int8"]
    assert any(line.startswith("  int8 (dynamic)") and f"{int8:.2f}" in line for line in printed)
    assert printed[-1].endswith("/model, model_int8, model.onnx, model_int8.onnx, model.nsz")
    reloaded = netslim.load(out / "model_int8")
    assert type(reloaded[1].weight).__name__ != "Parameter"
    int8 = [m.weight.qdata for m in reloaded.modules() if hasattr(m, "weight")]
    assert len(int8) == 3
    assert (zeros := zero_fraction(int8)) > 0.45, zeros  # the default ratio, 0.5
    with torch.no_grad():
        assert reloaded(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert (out / "model_int8.onnx").stat().st_size > 0
    assert "accuracy_int8" in json.dumps(report)


def test_a_hugging_face_job_prints_only_netslims_own_lines(tmp_path: Path) -> None:
    """A Hugging Face model imports torchao through transformers, whose enums torch logs a
    deprecation for, and loads under transformers' "Loading weights" bar: with --no-progress
    the job's output is netslim's table and nothing else (a fresh process: both happen once)."""
    from tiny_hf import tiny_bert

    tiny_bert(max_position_embeddings=32).save_pretrained(tmp_path / "bert")
    argv = ["prune", f"hf:{tmp_path / 'bert'}", "--method", "channel", "--data", "none"]
    argv += ["--no-latency", "--no-progress", "--out", str(tmp_path / "job")]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    code = "import sys; from netslim.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.lstrip().startswith("before")


@pytest.mark.parametrize("command", ["prune", "sensitivity", "lottery", "run", "eval"])
def test_data_the_model_cannot_take_is_one_line_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every job that reads data puts one sample through the model first: one-channel images
    for a three-channel model are one line naming the data, exit 2, nothing written (before,
    only prune checked: sensitivity, lottery, run and eval --data raised a traceback)."""
    source = tmp_path / "rgb.py"
    source.write_text(
        "from torch import nn\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, 10))\n"
    )
    out = tmp_path / "out"
    spec = f"py:{source}:build"
    data = ["--data", "synthetic", "--limit-train", "64", "--limit-test", "64"]
    argv = {
        "prune": ["prune", spec, *data, "--no-latency", "--out", str(out)],
        "sensitivity": ["sensitivity", spec, *data, "--out", str(out)],
        "lottery": ["lottery", spec, *data, "--rounds", "1", "--out", str(out)],
        "eval": ["eval", str(tmp_path / "job"), *data[:2], "--trust-code", "--no-latency"],
    }
    if command == "eval":  # a saved job of the model, measured on data it cannot take
        job = ["prune", spec, "--data", "none", "--example-shape", "1,3,8,8", "--no-latency"]
        assert main([*job, "--out", str(tmp_path / "job")]) == 0
        capsys.readouterr()
    if command == "run":
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(
            f"model: {spec}\ndata: synthetic\nlimit_train: 64\nlimit_test: 64\nout: {out}\n"
            "steps:\n  - train: {epochs: 1}\n"
        )
        argv["run"] = ["run", str(recipe), "--trust-code"]
    assert main(argv[command]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("netslim: error:") and "\n" not in err, err
    assert "--data synthetic gives inputs of shape 1,1,28,28, which do not fit" in err
    assert not out.exists()
