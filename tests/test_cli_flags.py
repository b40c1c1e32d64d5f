"""The command line checks every input before any work: flags that do not apply to the chosen
method, invalid values for any flag, shapes that do not fit the model, output paths. Each is
exit code 2 and one line on stderr, with nothing written. Runs in-process (``main(argv)``)."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest
import torch

from netslim.cli.args import Deprecated
from netslim.cli.main import build_parser, main
from netslim.methods import JOB_METHODS, settings_read_by

# A valid, tiny job: anything it does beyond parsing would train for a fraction of a second.
BASE = [
    "zoo:lenet300",
    "--data",
    "synthetic",
    "--limit-train",
    "64",
    "--limit-test",
    "64",
    "--epochs",
    "0",
    "--finetune-epochs",
    "0",
    "--no-latency",
    "--no-progress",
]

# A value that changes each method setting away from its default (a flag given on purpose).
METHOD_FLAGS: dict[str, list[str]] = {
    "ratio": ["--ratio", "0.3"],
    "scope": ["--scope", "layer"],
    "criterion": ["--criterion", "l1"],
    "nm": ["--nm", "2:4"],
    "rounds": ["--rounds", "2"],
    "agp_start": ["--agp-start", "0.2"],
    "l1_reg": ["--l1-reg", "1e-4"],
    "l1_warmup": ["--l1-warmup", "5"],
    "per_module": ["--per-module", "per_module.json"],
    "target_macs": ["--target-macs", "0.5"],
    "target_latency_ms": ["--target-latency", "1.0"],
    "target_speedup": ["--target-speedup", "1.5"],
    "runtime": ["--runtime", "onnxruntime"],
    "threads": ["--threads", "2"],
    "batch": ["--batch", "4"],
    "round_to": ["--round-to", "8"],
    "remove": ["--remove", "1"],
    "target_open": ["--target-open", "2"],
    "per_input": ["--per-input"],
    "ignore": ["--ignore", "1"],
    "freeze": ["--freeze", "1"],
    "keep_masks": ["--keep-masks"],
    "reconstruct": ["--reconstruct"],
    "blocks": ["--blocks"],
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


def _not_applicable() -> list[tuple[str, str]]:
    pairs = []
    for method in JOB_METHODS:
        read = settings_read_by(method)
        pairs += [(method, s) for s in METHOD_FLAGS if s not in read]
    return pairs


def test_every_method_setting_is_covered() -> None:
    read = set().union(*(settings_read_by(m) for m in JOB_METHODS))
    assert read == set(METHOD_FLAGS)


@pytest.mark.parametrize(("method", "setting"), _not_applicable())
def test_a_flag_for_another_method_is_an_error(
    method: str, setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["prune", *BASE, "--method", method, *METHOD_FLAGS[setting], "--out", str(out)]
    code, err = _run(argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert len(lines) == 1 and f"--method {method}" in lines[0], err
    assert METHOD_FLAGS[setting][0] in lines[0]
    assert "Traceback" not in err and not out.exists()


def test_same_fraction_flag_and_defaults_in_every_command() -> None:
    """#22: one vocabulary: --ratio for the fraction removed; shared flags share defaults."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    defaults: dict[str, dict[str, object]] = {}
    for name in ("prune", "lottery", "llm", "sensitivity"):
        actions = {opt: a for a in subs[name]._actions for opt in a.option_strings}
        defaults[name] = {opt: a.default for opt, a in actions.items()}
        if name != "sensitivity":  # scans many ratios (--ratios) instead of removing one
            assert actions["--ratio"].default == 0.5, name
            for old in ("--rate", "--sparsity"):  # deprecated spellings of the same flag
                assert old not in actions or isinstance(actions[old], Deprecated)
    for flag in ("--lr", "--batch-size", "--seed", "--epochs", "--data", "--weights"):
        values = {n: d[flag] for n, d in defaults.items() if flag in d}
        assert len(values) >= 3 and len(set(map(repr, values.values()))) == 1, (flag, values)
    assert defaults["prune"]["--schedule"] == "oneshot"  # lottery's is --lr-schedule
    assert "--schedule" not in {
        opt
        for a in subs["lottery"]._actions
        if a.help != argparse.SUPPRESS
        for opt in a.option_strings
    }


@pytest.mark.parametrize(
    "argv, says",
    [
        (["prune", "--model", "zoo:lenet300"], "(MODEL is positional: netslim prune MODEL ...)"),
        (["prune", "zoo:lenet300", "--ration", "0.3"], "--ration 0.3 (did you mean --ratio?)"),
        (["llm", "model-dir", "--sparsty=0.5"], "(did you mean --sparsity?)"),
        (["prune", "zoo:lenet300", "stray"], "unrecognized arguments: stray"),
    ],
)
def test_an_unknown_argument_is_one_line_naming_its_command(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse leaves a subcommand's unknown flags to the top parser, which printed
    ``netslim: error: netslim: unrecognized arguments``: now the command is named, with the flag
    that was likely meant, and nothing runs."""
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"netslim: error: {argv[0]}: unrecognized"), err
    assert says in err[0]
    assert not out.exists()


def test_deprecated_spelling_warns_and_works(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["prune", "zoo:lenet300", "--rate", "0.3"])
    assert args.ratio == 0.3 and "--rate is deprecated" in capsys.readouterr().err


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in (
        "(default: 0.5)",
        "(default: oneshot)",
        "(default: 0.001)",
        "(default: 128)",
        "random seed (default: 0)",
    ):
        assert shown in text


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--example-shape", "2,3,28,28"], "example input"),
        (["--out", "FILE"], "not a directory"),
        (["--weights", "missing.safetensors"], "--weights"),
        (["--method", "unstructured", "--nm", "x:y"], "--nm"),
        (["--method", "unstructured", "--nm", "2:4"], "--ignore 0 3"),  # every misfit at once
    ],
)
def test_inputs_checked_before_work(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "FILE").write_text("x")
    extra = [str(tmp_path / e) if e in ("FILE", "missing.safetensors") else e for e in extra]
    argv = ["prune", "zoo:lenet5", *BASE[1:], *extra]
    if "--out" not in extra:
        argv += ["--out", str(tmp_path / "out")]
    code, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "out").exists()


def test_models_without_a_default_data_set_ask_for_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torchvision")
    code, err = _run(["prune", "torchvision:resnet18", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--data" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_text = st.text(alphabet="abcxyz:/,.-_09", min_size=1, max_size=8)
_negative = st.integers(max_value=-1).map(str)
_bad_fraction = st.one_of(
    st.floats(min_value=1.0, max_value=1e9).map(str),
    st.floats(max_value=-1e-6, min_value=-1e9).map(str),
    st.sampled_from(["nan", "inf", "-inf", "half"]),
)
# A fraction *kept* (``kept_fraction``, e.g. --target-macs) is in (0, 1]: 1.0 keeps everything.
_bad_kept_fraction = _bad_fraction.filter(lambda t: t != "1.0")
# flag -> (extra arguments that make the flag apply, a strategy of invalid values)
INVALID: dict[str, tuple[list[str], object]] = {
    "--method": ([], _text.filter(lambda t: t not in JOB_METHODS)),
    "--ratio": ([], _bad_fraction),
    "--scope": ([], _text.filter(lambda t: t not in ("global", "layer", "row"))),
    "--criterion": ([], _text),
    "--nm": ([], _text.filter(lambda t: ":" not in t)),
    "--schedule": ([], _text),
    "--rounds": (["--schedule", "iterative"], st.integers(max_value=0).map(str)),
    # in [0, --ratio): the default ratio is 0.5
    "--agp-start": (["--schedule", "agp"], st.sampled_from(["0.5", "0.7", "1", "-0.1", "nan"])),
    "--l1-reg": ([], st.floats(max_value=-1e-9, min_value=-1e9).map(str)),
    "--l1-warmup": (["--method", "slimming"], _negative),
    "--per-module": (["--method", "channel"], st.just("missing.json")),
    "--target-macs": (["--method", "channel"], _bad_kept_fraction),
    "--target-latency": (["--method", "channel"], st.sampled_from(["0", "-1", "nan", "x"])),
    "--round-to": (["--method", "channel"], st.integers(max_value=0).map(str)),
    "--target-speedup": (["--method", "channel"], st.sampled_from(["0", "-2", "nan", "x"])),
    "--runtime": (["--method", "channel"], _text),
    "--threads": (["--method", "channel"], st.integers(max_value=0).map(str)),
    "--batch": (["--method", "channel"], st.integers(max_value=0).map(str)),
    "--remove": (["--method", "layer"], st.integers(max_value=0).map(str)),
    "--target-open": (["--method", "gate"], _negative),
    "--ignore": ([], st.just("no.such.module")),
    "--freeze": (["--method", "channel"], st.just("no.such.module")),
    "--example-shape": ([], st.sampled_from(["2,3,28,28", "0,1", "a,b", "1,1,7", ""])),
    "--data": ([], st.sampled_from(["no-such-data", "/no/such/dir"])),
    "--lr": ([], st.sampled_from(["0", "-1", "nan", "inf", "fast"])),
    "--batch-size": ([], st.integers(max_value=0).map(str)),
    "--limit-train": ([], st.integers(max_value=0).map(str)),
    "--limit-test": ([], st.integers(max_value=0).map(str)),
    "--seed": ([], _negative),
    "--epochs": ([], _negative),
    "--finetune-epochs": ([], _negative),
    "--out": ([], st.just("FILE")),
    "--checkpoint-every": ([], _negative),
    "--checkpoint-dir": ([], st.just("FILE")),
    "--resume": ([], st.just("/no/such/checkpoints")),
    "--quantize": ([], _text.filter(lambda t: t != "int8")),
    "--weights": ([], st.sampled_from(["missing.pt", "FILE"])),
    "--val-split": ([], _bad_fraction),
    # the column flags name columns of an hf: data set: with any other --data they are refused
    "--image-column": ([], _text),
    "--text-column": ([], _text),
    "--label-column": ([], _text),
}


def test_every_prune_flag_is_fuzzed() -> None:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags = {
        a.option_strings[0]
        for a in subs["prune"]._actions
        if a.option_strings and a.help != argparse.SUPPRESS and a.nargs != 0
    } - {"-h"}
    assert flags <= set(INVALID), flags - set(INVALID)


@pytest.mark.noop_ok("invalid values exit 2 before any work: nothing is pruned or written")
@hypothesis.settings(
    max_examples=80, derandomize=True, deadline=None, database=None, print_blob=False
)
@hypothesis.given(
    st.sampled_from(sorted(INVALID)).flatmap(
        lambda flag: INVALID[flag][1].map(lambda value: (flag, value))
    )
)
def test_invalid_values_exit_2_with_one_line(tmp_path_factory, flag_value) -> None:
    """#18: no invalid CLI value reaches a traceback; nothing is written."""
    flag, value = flag_value
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "FILE").write_text("not a directory, not weights")
    value = str(tmp / value) if value in ("FILE", "missing.json", "missing.pt") else value
    out = tmp / "out"
    argv = ["prune", *BASE, *INVALID[flag][0], "--out", str(out), f"{flag}={value}"]
    if flag == "--out":
        argv = [a for a in argv if a not in ("--out", str(out))]
    _assert_refused_before_work(argv, out, tmp)


def test_sparse_int8_run_writes_compressed_artifact_and_folds_masks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#19: --quantize int8 on a 95% sparse model: model.nsz with the run's int8 values,
    compressed_bytes in report.json and the table, >= 20x smaller than dense float32; the
    saved model is the folded one (what was measured), sparse in parameters()."""
    pytest.importorskip("torchao")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("zstandard")
    import json

    import netslim

    out = tmp_path / "out"
    argv = ["prune", *BASE, "--ratio", "0.95", "--quantize", "int8", "--out", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    ratio = report["dense_fp32_bytes"] / report["compressed_bytes"]
    assert ratio >= 20 and (out / "model.nsz").stat().st_size == report["compressed_bytes"]
    assert "compressed model.nsz" in table and f"{ratio:.2f}x smaller than dense float32" in table
    assert report["compressed"]["values"] == "int8-channel"
    model = netslim.load(out / "model")
    assert not any(".parametrizations." in k for k in model.state_dict())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert zeros >= report["sparsity"]["overall"]["pruned"] > 0
    assert report["size_bytes_after"] < 0.2 * report["size_bytes_before"]


@pytest.mark.slow
def test_prune_your_own_resnet18_weights(tmp_path: Path) -> None:
    """#22 bar: prune torchvision:resnet18 --weights W.safetensors --method channel --ratio 0.5
    --data none --example-shape 1,3,64,64: the given weights are pruned (the same pruning of
    the same weights through the API gives the same model) and the reloaded model matches."""
    torchvision = pytest.importorskip("torchvision")
    import torch
    from safetensors.torch import save_file

    import netslim
    from netslim.models.weights import load_weights

    torch.manual_seed(1)
    trained = torchvision.models.resnet18()
    with torch.no_grad():
        for module in trained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # not the init values: "trained"
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.uniform_(-0.1, 0.1)
    save_file(trained.state_dict(), str(tmp_path / "W.safetensors"))
    out = tmp_path / "out"
    argv = ["prune", "torchvision:resnet18", "--weights", str(tmp_path / "W.safetensors")]
    argv += ["--method", "channel", "--ratio", "0.5", "--data", "none"]
    argv += ["--example-shape", "1,3,64,64", "--no-latency", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    reloaded = netslim.load(out / "model")

    by_api = load_weights(netslim.build_model("torchvision:resnet18"), tmp_path / "W.safetensors")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    netslim.prune_(
        by_api, netslim.Channels(ratio=0.5, scope="global", criterion="l2"), example_inputs=(x,)
    )
    assert reloaded.conv1.out_channels < 64
    batch = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(reloaded(batch), by_api.eval()(batch), rtol=0, atol=0)


# The other training commands: a valid tiny base and invalid values for each of their flags.
OTHER_BASES = {
    "lottery": ["zoo:lenet300", "--data", "synthetic", "--limit-train", "64"]
    + ["--limit-test", "32", "--rounds", "1", "--epochs", "0"],
    "sensitivity": ["zoo:lenet5", "--data", "synthetic", "--limit-train", "64"]
    + ["--limit-test", "32", "--epochs", "0", "--no-progress", "--ratios", "0.5"],
}
OTHER_INVALID: dict[tuple[str, str], object] = {
    ("lottery", "--ratio"): st.sampled_from(["0", "1", "-0.5", "nan", "x"]),
    ("lottery", "--rounds"): st.integers(max_value=0).map(str),
    ("lottery", "--scope"): _text,
    ("lottery", "--classifier-rate"): _bad_fraction,
    ("lottery", "--masks"): _text,
    ("lottery", "--rewind"): _text,
    ("lottery", "--rewind-iter"): _negative,
    ("lottery", "--controls"): st.just("astrology"),
    ("lottery", "--epochs"): _negative,
    ("lottery", "--iterations"): st.integers(max_value=0).map(str),
    ("lottery", "--optimizer"): _text,
    ("lottery", "--lr-schedule"): _text,
    ("lottery", "--eval-every"): st.integers(max_value=0).map(str),
    ("lottery", "--val-size"): _negative,
    ("lottery", "--lr"): st.sampled_from(["0", "-1", "nan", "inf"]),
    ("lottery", "--batch-size"): st.integers(max_value=0).map(str),
    ("lottery", "--data"): st.sampled_from(["no-such-data", "/no/such/dir"]),
    ("lottery", "--weights"): st.sampled_from(["missing.pt", "FILE"]),
    ("lottery", "--out"): st.just("FILE"),
    ("sensitivity", "--ratios"): st.sampled_from(["a,b", "1.5", "-0.1", ""]),
    ("sensitivity", "--criterion"): _text,
    ("sensitivity", "--target-macs"): _bad_kept_fraction,
    ("sensitivity", "--round-to"): st.integers(max_value=0).map(str),
    ("sensitivity", "--example-shape"): st.sampled_from(["2,3,28,28", "0,1", "a"]),
    ("sensitivity", "--epochs"): _negative,
    ("sensitivity", "--seed"): _negative,
    ("sensitivity", "--weights"): st.sampled_from(["missing.pt", "FILE"]),
    ("sensitivity", "--out"): st.just("FILE"),
}


@hypothesis.settings(
    max_examples=60, derandomize=True, deadline=None, database=None, print_blob=False
)
@hypothesis.given(
    st.sampled_from(sorted(OTHER_INVALID)).flatmap(
        lambda key: OTHER_INVALID[key].map(lambda value: (*key, value))
    )
)
def test_invalid_values_of_other_commands_exit_2(tmp_path_factory, case) -> None:
    command, flag, value = case
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "FILE").write_text("not a directory, not weights")
    value = str(tmp / value) if value in ("FILE", "missing.pt") else value
    out = tmp / "out"
    argv = [command, *OTHER_BASES[command], "--out", str(out), f"{flag}={value}"]
    _assert_refused_before_work(argv, out, tmp)


@pytest.mark.slow
def test_eval_reads_every_artifact_a_command_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """#22: eval takes the job directory, a .nsz from compress and an ONNX export."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("zstandard")
    import json

    out = tmp_path / "out"
    assert main(["prune", *BASE, "--ratio", "0.8", "--out", str(out)]) == 0
    accuracy = json.loads((out / "report.json").read_text())["accuracy_after"]
    from pruned import weights, zero_fraction

    import netslim

    saved = zero_fraction(weights(netslim.load(out / "model")))
    assert saved > 0.75, saved  # what eval reads below is the pruned model (ratio 0.8)
    assert main(["compress", str(out), "--values", "exact"]) == 0
    assert (out / "model.nsz").is_file()  # where compress's help says
    assert main(["export", str(out)]) == 0
    assert (out / "export" / "model.onnx").is_file()  # where export's help says
    capsys.readouterr()
    for target in (out, out / "model.nsz", out / "export"):
        assert main(["eval", str(target), "--no-latency"]) == 0, target
        measured = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
        assert measured["accuracy"] == pytest.approx(accuracy, abs=1e-9), target


def _assert_refused_before_work(argv: list[str], out, tmp) -> None:
    """``netslim ARGV`` exits 2 with one stderr line, no traceback, and writes nothing: no
    ``out`` directory, ``tmp`` still holds only the decoy ``FILE``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    lines = [line for line in err.getvalue().splitlines() if "warning" not in line]
    assert code == 2, (argv, err.getvalue())
    assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    assert not out.exists() and sorted(p.name for p in tmp.iterdir()) == ["FILE"]


@pytest.mark.parametrize(
    ("model", "flags"),
    [
        ("zoo:lenet300", ["--ignore", "no.such.module"]),
        ("zoo:lenet300", ["--method", "channel", "--ignore", "3x"]),
        ("zoo:lenet300", ["--method", "channel", "--freeze", "no.such.module"]),
        ("zoo:lenet300", ["--method", "channel", "--per-module", "PER_MODULE"]),
        ("zoo:lenet300", ["--nm", "4:8"]),  # layer 3's input width 300 is not a multiple of 8
        ("zoo:lenet300", ["--method", "layer", "--remove", "1"]),  # no removable block
        ("zoo:resnet20", ["--method", "layer", "--remove", "7"]),  # 7 blocks: one must remain
        ("zoo:lenet300", ["--method", "channel", "--target-speedup", "2", "--runtime", "cuda"]),
    ],
)
def test_settings_the_model_cannot_take_are_refused_before_training(
    model: str, flags: list[str], tmp_path: Path, monkeypatch
) -> None:
    """A module name the model lacks, an N:M that does not divide, more blocks than the model
    has, a time target on a runtime this machine lacks (no GPU here, as the test makes it):
    refused before the first training step (the method's preflight; these used to be found by
    the pruning step, after --epochs of training were spent)."""
    import json

    from netslim.jobs import pipeline

    fits: list[int] = []
    monkeypatch.setattr(pipeline._Trainer, "fit", lambda self, *a, **k: fits.append(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    per_module = tmp_path / "per_module.json"
    per_module.write_text(json.dumps({"per_module": {"no.such.module": 0.5}}))
    work = tmp_path / "work"
    work.mkdir()
    (work / "FILE").write_text("decoy")
    flags = [str(per_module) if f == "PER_MODULE" else f for f in flags]
    argv = ["prune", model, *BASE[1:], "--epochs", "1", *flags, "--out", str(work / "out")]
    _assert_refused_before_work(argv, work / "out", work)
    assert fits == []


@pytest.mark.parametrize(
    "flags", [["--ignore", "fc9"], ["--example-shape", "1,3,32,32"], ["--ratios", "0.5,1.5"]]
)
def test_sensitivity_checks_its_inputs_before_training(flags, tmp_path: Path, monkeypatch) -> None:
    """`netslim sensitivity` with a module name the model lacks, an example shape that does not
    fit it, or a ratio out of (0, 1): refused before training (each used to fail after it)."""
    import netslim.training

    trained: list[int] = []
    monkeypatch.setattr(netslim.training, "train", lambda *a, **k: trained.append(1))
    (tmp_path / "FILE").write_text("decoy")
    # a later --ratios in flags replaces the valid one
    argv = ["sensitivity", *BASE[:7], "--epochs", "1", "--ratios", "0.5", *flags]
    _assert_refused_before_work([*argv, "--out", str(tmp_path / "out")], tmp_path / "out", tmp_path)
    assert trained == []


@pytest.mark.parametrize("flags", [["--distill"], ["--l1-reg", "0.01"]])
def test_training_flags_without_data_are_refused(flags, tmp_path: Path) -> None:
    """--distill and --l1-reg act only while training; with --data none they used to be
    ignored without a word."""
    (tmp_path / "FILE").write_text("decoy")
    argv = ["prune", "zoo:lenet300", "--data", "none", "--no-latency", *flags]
    _assert_refused_before_work([*argv, "--out", str(tmp_path / "out")], tmp_path / "out", tmp_path)


def test_without_data_the_report_says_nothing_was_trained(tmp_path: Path) -> None:
    """No data: 'before' is the model as built and the pruned model got no more training (the
    report used to describe --epochs and --finetune-epochs that never ran)."""
    import json

    argv = ["prune", "zoo:lenet300", "--data", "none", "--no-latency", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    budget = json.loads((tmp_path / "out" / "report.json").read_text())["budget"]
    assert "nothing trained" in budget["before"] and "with 0 more" in budget["after"]
    assert "note" not in budget


def test_eval_takes_data_none_as_prune_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--data none`` means the same to eval as to prune: measure without accuracy (eval used
    to look for a data set called 'none' and exit 2)."""
    import json

    out = tmp_path / "out"
    assert main(["prune", *BASE, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--data", "none", "--no-latency"]) == 0
    measured = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert measured["accuracy"] is None and measured["params"] > 0
    assert main(["eval", str(out), "--no-latency"]) == 0  # the run's own data: accuracy
    measured = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert measured["accuracy"] is not None
