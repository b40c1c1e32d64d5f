"""YAML recipes: strict validation naming the line, and a full chain on tiny synthetic data."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import test_latency
import torch

from netslim.cli.main import main
from netslim.compress import decompress
from netslim.errors import ConfigError, NetslimError
from netslim.jobs.recipe import parse_recipe, run_recipe

pytest.importorskip("yaml")
fake_clock = test_latency.fake_clock  # the fixture: op and model timings faked

GOOD = """\
model: zoo:lenet300
data: synthetic
limit_train: 256
limit_test: 128
batch_size: 64
out: {out}
steps:
  - train: {{epochs: 1, lr: 0.003}}
  - prune: {{method: unstructured, ratio: 0.9}}
  - finetune:
      epochs: 1
      distill: true
  - quantize: {{mode: dynamic}}
  - compress: {{values: int8-channel}}
"""


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("ratio: 0.9", "ratoi: 0.9", 9, "unknown field 'ratoi' in prune (did you mean 'ratio'?)"),
        ("- quantize:", "- quantise:", 13, "unknown step 'quantise'"),
        ("epochs: 1\n", "epochs: one\n", 11, "finetune.epochs must be int"),
        ("distill: true", "distill: 3", 12, "finetune.distill must be bool"),
        ("batch_size: 64", "batchsize: 64", 5, "unknown field 'batchsize' in recipe"),
        ("  - train: {epochs: 1, lr: 0.003}", "  - train: 5", 8, "train must be a mapping"),
        ("  - train: {epochs: 1, lr: 0.003}", "  - train: {}\n    prune: {}", 8, "one-key mapping"),
        ("model: zoo:lenet300\n", "", 1, "lacks required field(s): model"),
        ("limit_test: 128", "limit_test: [128", 5, "not valid YAML"),
    ],
)
def test_invalid_recipes_name_the_line(old: str, new: str, line: int, message: str) -> None:
    text = GOOD.format(out="x").replace(old, new)
    with pytest.raises(ConfigError) as info:
        parse_recipe(text, "r.yaml")
    assert f"r.yaml line {line}" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("method: unstructured", "method: magic", 9, "unknown method"),
        ("mode: dynamic", "mode: int4", 13, "unknown quantize mode"),
        ("values: int8-channel", "values: int3", 14, "unknown values"),
        ("method: unstructured", "method: channel, target_speedup: 2, runtime: tpu", 9, "tpu"),
        ("method: unstructured", "method: channel, target_speedup: 0.5", 9, "target_speedup"),
        ("ratio: 0.9", "ratio: 0.9, runtime: onnxruntime", 9, "--method unstructured"),
    ],
)
def test_semantic_errors_fail_before_training(old, new, line, message, tmp_path: Path) -> None:
    recipe = parse_recipe(GOOD.format(out=tmp_path).replace(old, new), "r.yaml")
    with pytest.raises(ConfigError, match=f"r.yaml line {line}: .*{message}"):
        run_recipe(recipe)
    assert not (tmp_path / "recipe_report.json").exists()


def test_recipe_end_to_end_via_cli(tmp_path: Path, capsys) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(GOOD.format(out=tmp_path / "out"))
    assert main(["run", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "line 13: quantize" in printed
    report = json.loads((tmp_path / "out" / "recipe_report.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == ["train", "prune", "finetune", "quantize", "compress"]
    assert steps["prune"]["summary"]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert steps["quantize"]["report"]["quantized"] == ["1", "3", "5"]
    assert abs(steps["quantize"]["accuracy"] - steps["finetune"]["accuracy"]) < 0.05
    assert steps["compress"]["ratio"] > 10
    back = decompress(tmp_path / "out" / "model.nsz")
    weights = [m.weight for m in back.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.9, abs=0.01)  # the pruned model came back, not a dense one
    assert (tmp_path / "out" / "model" / "netslim.json").is_file()


def test_cli_bad_recipe_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: zoo:lenet300\nsteps:\n  - shrink: {}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 3" in err and "shrink" in err


@pytest.mark.slow
def test_prune_quantize_int8_cli(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    args = ["prune", "zoo:lenet300", "--ratio", "0.9", "--data", "synthetic", "--limit-train", "256",
            "--limit-test", "128", "--epochs", "1", "--finetune-epochs", "1", "--no-progress",
            "--no-latency", "--quantize", "int8", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    quant = report["quantize"]
    # the finished unstructured run folded its masks before quantizing (nothing left to fold)
    assert quant["int8"]["mode"] == "dynamic" and quant["int8"]["masks_folded"] == []
    assert report["sparsity"]["overall"]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert abs(quant["accuracy_int8"] - report["accuracy_after"]) < 0.05
    assert (tmp_path / "model_int8.onnx").is_file()
    assert quant["onnx"]["max_abs_diff"] < 1e-4
    # eval of the job measures its saved model, not the model.onnx written beside it
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["eval", str(tmp_path), "--no-latency"]) == 0
    measured = json.loads(out.getvalue().split("\n}\n")[0] + "\n}")
    assert "format" not in measured and measured["params"] == report["params_after"]


def _run_prune_recipe(tmp_path: Path, prune: str, settings: str = "") -> dict:
    """GOOD up to its prune step, that step's mapping replaced by ``prune`` and ``settings``
    lines added to the top-level ones; run, and return the recipe report (the model is in
    ``tmp_path/out/model``)."""
    path = tmp_path / "recipe.yaml"
    text = GOOD.format(out=tmp_path / "out").split("  - finetune:")[0]
    text = text.replace("batch_size: 64\n", f"batch_size: 64\n{settings}")
    path.write_text(text.replace("method: unstructured, ratio: 0.9", prune))
    run_recipe(parse_recipe(path.read_text(), str(path)))
    return json.loads((tmp_path / "out" / "recipe_report.json").read_text())


def test_recipe_prunes_channels(tmp_path: Path) -> None:
    """A recipe's prune step reads the recipe's data as `netslim prune --data` does: channel
    pruning refits by default (the auto rule), ``reconstruct: false`` turns that off, and a
    data-driven criterion scores on it (before, the step got no loader: taylor failed with
    "scores with data" after the train step had run, and reconstruction could not be had)."""
    report = _run_prune_recipe(tmp_path, "method: channel, ratio: 0.5")
    prune = next(s for s in report["steps"] if s["step"] == "prune")
    assert prune["summary"]["reconstruction"]["layers"]
    assert prune["summary"]["params"]["after"] < prune["summary"]["params"]["before"]
    off = _run_prune_recipe(tmp_path, "method: channel, ratio: 0.5, reconstruct: false")
    assert "reconstruction" not in next(s for s in off["steps"] if s["step"] == "prune")["summary"]
    taylor = _run_prune_recipe(tmp_path, "method: channel, ratio: 0.5, criterion: taylor")
    summary = next(s for s in taylor["steps"] if s["step"] == "prune")["summary"]
    assert summary["params"]["after"] < summary["params"]["before"]
    from pruned import param_count

    import netslim

    saved = netslim.load(tmp_path / "out" / "model")  # the model itself, not the summary
    assert param_count(saved) < 0.8 * param_count(netslim.build_model("zoo:lenet300"))


def test_recipe_unstructured_refits_only_without_a_finetune_step_after(tmp_path: Path) -> None:
    """The reconstruct default follows `netslim prune`'s rule, a later finetune step standing
    for --finetune-epochs: unstructured masks refit only when nothing fine-tunes after them."""
    from netslim.jobs.recipe.runner import _finetunes_after, _prune_config

    full = parse_recipe(GOOD.format(out=tmp_path / "out"), "full.yaml")
    cut = parse_recipe(GOOD.format(out=tmp_path / "out").split("  - finetune:")[0], "cut.yaml")
    index = next(i for i, (kind, _, _) in enumerate(full.steps) if kind == "prune")
    step = full.steps[index][1]
    assert _finetunes_after(full, index) and not _finetunes_after(cut, index)
    assert _prune_config(full.settings, step, finetunes_after=True).reconstruct is False
    assert _prune_config(cut.settings, step, finetunes_after=False).reconstruct is True


def test_recipe_gate_step_trains_on_the_recipe_data(tmp_path: Path) -> None:
    """`method: gate` trains weights and gates on the recipe's data for the step's epochs, at
    the step's lr (before, always 1e-3), and removes the closed blocks (it failed for want of
    data before); `epochs` or `lr` on any other method is refused before anything runs, naming
    the line."""
    from netslim.jobs.recipe.runner import _prune_config

    text = GOOD.format(out=tmp_path / "out").split("  - finetune:")[0]
    text = text.replace("zoo:lenet300", "zoo:resnet20").replace("epochs: 1, lr: 0.003", "epochs: 0")
    gate = text.replace(
        "method: unstructured, ratio: 0.9", "method: gate, epochs: 1, target_open: 3"
    )
    report = run_recipe(parse_recipe(gate, "gate.yaml"))
    summary = next(s for s in report["steps"] if s["step"] == "prune")["summary"]
    assert summary["method"] == "gates" and summary["target_open"] == 3
    assert summary["final_loss"] is not None and summary["removed"]
    wrong = text.replace("method: unstructured, ratio: 0.9", "method: channel, epochs: 3")
    with pytest.raises(ConfigError, match="line 9: prune: epochs in a prune step is gate"):
        run_recipe(parse_recipe(wrong, "wrong.yaml"))
    wrong = text.replace("method: unstructured, ratio: 0.9", "method: channel, lr: 0.01")
    with pytest.raises(ConfigError, match="line 9: prune: lr in a prune step is gate"):
        run_recipe(parse_recipe(wrong, "wrong.yaml"))
    recipe = parse_recipe(gate.replace("target_open: 3", "target_open: 3, lr: 0.02"), "g.yaml")
    step = next(step for kind, step, _ in recipe.steps if kind == "prune")
    assert _prune_config(recipe.settings, step, finetunes_after=False).lr == 0.02


def test_recipe_prune_fields_are_the_job_settings_with_their_defaults() -> None:
    """A prune step is `netslim prune` written down: each field is a job setting, default too."""
    from dataclasses import MISSING, fields

    from netslim.jobs.recipe.schema import PruneStep
    from netslim.jobs.settings import JobSettings

    job = {f.name: f for f in fields(JobSettings)}
    for f in fields(PruneStep):
        assert f.name in job, f.name
        ours = f.default_factory() if f.default is MISSING else f.default
        theirs = (
            job[f.name].default_factory() if job[f.name].default is MISSING else job[f.name].default
        )
        assert ours == theirs, f.name
    wanted = ("target_speedup", "runtime", "threads", "batch", "freeze", "per_module", "remove")
    wanted += ("blocks", "reconstruct", "epochs", "lr", "target_open", "per_input")
    assert set(wanted) <= {f.name for f in fields(PruneStep)}  # as on the command line


@pytest.mark.usefixtures("fake_clock")
def test_recipe_prunes_channels_to_a_time_target(tmp_path: Path) -> None:
    """A prune step with a time target plans on the runtime it names and reports the measured
    speed-up (the same planner as `netslim prune --target-speedup`; timings faked)."""
    step = "method: channel, target_speedup: 1.5, runtime: torch, threads: 2, batch: 3"
    report = _run_prune_recipe(tmp_path, step)
    summary = next(s for s in report["steps"] if s["step"] == "prune")["summary"]
    latency = summary["latency"]
    assert latency["runtime"] == "torch" and latency["threads"] == 2 and latency["batch"] == 3
    assert latency["measured_speedup"] == pytest.approx(1.5, rel=0.05)
    assert summary["params"]["after"] < summary["params"]["before"]


@pytest.mark.usefixtures("fake_clock")
def test_netslim_run_prints_a_time_targets_plan(tmp_path: Path, capsys) -> None:
    """`netslim run` prints under a prune step with a time target what it asked for and what
    its check measured, as `netslim prune` does under its table."""
    path = tmp_path / "recipe.yaml"
    text = GOOD.format(out=tmp_path / "out").split("  - finetune:")[0]
    step = "method: channel, target_speedup: 1.5, threads: 2"
    path.write_text(text.replace("method: unstructured, ratio: 0.9", step))
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(out) if ": prune accuracy" in line)
    assert out[at + 1].startswith("  time target (torch, 2 thread(s), batch ")
    assert "1.50x faster than the unpruned model" in out[at + 1]
    assert out[at + 2].startswith("    plan predicted ") and "its check" in out[at + 2]
    assert not any("time target" in line for line in out[:at])


def test_recipe_step_warnings_are_in_its_report(tmp_path: Path) -> None:
    """What a step warns of (here a MACs target out of reach) is listed on that step in
    recipe_report.json, as netslim prune lists it in report.json."""
    report = _run_prune_recipe(tmp_path, "method: channel, target_macs: 0.001")
    prune = next(s for s in report["steps"] if s["step"] == "prune")
    assert len(prune["warnings"]) == 1 and "is unreachable" in prune["warnings"][0]
    assert all("warnings" not in s for s in report["steps"] if s["step"] != "prune")


def test_recipe_channel_step_freezes_and_reads_per_module(tmp_path: Path) -> None:
    """`freeze` keeps a module whole and `per_module` (sensitivity's proposal) sets a group's
    ratio, as `netslim prune --freeze / --per-module` do."""
    import netslim

    (tmp_path / "per_module.json").write_text(json.dumps({"per_module": {"3": 0.75}}))
    step = f"method: channel, ratio: 0.5, freeze: ['1'], per_module: {tmp_path}/per_module.json"
    _run_prune_recipe(tmp_path, step)
    saved = netslim.load(tmp_path / "out" / "model")
    dense = netslim.build_model("zoo:lenet300")
    assert saved[1].weight.shape == dense[1].weight.shape  # frozen: outputs and inputs whole
    assert saved[3].out_features == round(0.25 * dense[3].out_features)


def test_recipe_prune_steps_are_checked_before_the_first_step(tmp_path: Path, monkeypatch):
    """A prune step the model cannot take (a module it lacks, blocks it does not have) fails,
    naming its line, and an example_shape that does not fit the model fails, both before the
    train step before them runs."""
    import netslim.training

    trained: list[int] = []
    monkeypatch.setattr(netslim.training, "train", lambda *a, **k: trained.append(1))
    with pytest.raises(ConfigError, match=r"line 9: prune: freeze: no module named 'fc9'"):
        _run_prune_recipe(tmp_path, "method: channel, ratio: 0.5, freeze: [fc9]")
    with pytest.raises(NetslimError, match=r"line 9: prune: no removable block"):
        _run_prune_recipe(tmp_path, "method: layer, remove: 1")
    with pytest.raises(ConfigError, match=r"example input 1,3,32,32 does not fit .*example_shape"):
        _run_prune_recipe(
            tmp_path, "method: channel, ratio: 0.5", "example_shape: [1, 3, 32, 32]\n"
        )
    assert trained == [] and not (tmp_path / "out").exists()


def test_recipe_unstructured_then_channels_shrinks_the_masked_model(tmp_path: Path) -> None:
    """A channel step after a masking step prunes the masked layers (it used to find no group
    and leave the model as it was), and the saved model reloads with its masks, same outputs."""
    import netslim
    from netslim.core.masks import iter_masks

    steps = "method: unstructured, ratio: 0.5}\n  - prune: {method: channel, ratio: 0.5"
    report = _run_prune_recipe(tmp_path, steps)
    channel = [s for s in report["steps"] if s["step"] == "prune"][1]["summary"]
    assert channel["params"]["after"] < 0.8 * channel["params"]["before"]
    saved = netslim.load(tmp_path / "out" / "model")
    masks = iter_masks(saved)
    assert masks and all(int(m.count_nonzero()) < m.numel() for m in masks.values())
    x = torch.randn(4, 1, 28, 28)
    again = netslim.load(tmp_path / "out" / "model")
    with torch.no_grad():
        assert torch.equal(saved.eval()(x), again.eval()(x))


def test_recipe_reads_its_data_as_netslim_prune_does(tmp_path: Path) -> None:
    """A zoo model on a folder of RGB images with three classes, one tree split by
    ``val_split``: the model is built for the data's channels and classes, the example is one
    sample of it (the export takes 3x28x28), as ``netslim prune --data DIR`` does. Before, a
    recipe built the zoo model for one channel and ten classes and read no data options."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from test_data_sources import _tree

    root = _tree(tmp_path / "tree", splits=(("", 8),), mode="RGB")
    out = tmp_path / "out"
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"model: zoo:lenet5\ndata: {root}\nval_split: 0.25\nbatch_size: 8\nout: {out}\n"
        "steps:\n  - train: {epochs: 1}\n  - prune: {method: channel, ratio: 0.5}\n"
        "  - export: {onnx: true}\n"
    )
    report = run_recipe(parse_recipe(path.read_text(), str(path)))
    assert report["steps"][-1]["onnx"]["max_abs_diff"] < 1e-4
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    x = torch.randn(2, 3, 28, 28).numpy()
    assert session.get_inputs()[0].shape[1:] == [3, 28, 28]
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (2, 3)
