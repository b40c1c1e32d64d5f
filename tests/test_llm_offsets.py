"""Uneven sparsity among a block's linears (``LLMPrune.sparsity_offsets``): the arithmetic, the
pruned model, both storage paths, and bad settings refused before any work."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from test_llm_recovery import VOCAB, tiny_llama  # noqa: E402

from netslim.errors import ConfigError  # noqa: E402
from netslim.llm import LLMPrune, prune_model, prune_streaming  # noqa: E402
from netslim.llm.arch import block_linears, layers  # noqa: E402
from netslim.llm.offsets import linear_sparsities, matches  # noqa: E402

QK = {"q_proj": 0.2, "k_proj": 0.2}


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randint(0, VOCAB, (8, 32), generator=torch.Generator().manual_seed(3))


def _zeros(module: torch.nn.Module) -> float:
    return float((module.weight == 0).float().mean())


def test_names_match_whole_path_segments():
    assert matches("self_attn.q_proj", "q_proj") and matches("q_proj", "q_proj")
    assert matches("self_attn.q_proj", "self_attn.q_proj")
    assert not matches("self_attn.qq_proj", "q_proj") and not matches("q_proj_x", "q_proj")


@given(
    sizes=st.lists(st.integers(1, 10_000), min_size=2, max_size=7),
    sparsity=st.floats(0.3, 0.7),
    offset=st.floats(-0.2, 0.2),
)
def test_offsets_keep_the_block_sparsity(sizes, sparsity, offset):
    named = {f"l{i}": n for i, n in enumerate(sizes)}
    try:
        got = linear_sparsities(named, sparsity, {"l0": offset})
    except ConfigError as err:  # only when a share leaves (0, 1)
        assert "outside (0, 1)" in str(err)
        return
    mean = sum(got[k] * n for k, n in named.items()) / sum(sizes)
    assert mean == pytest.approx(sparsity, abs=1e-9)
    assert got["l0"] == pytest.approx(sparsity + offset)
    rest = {got[k] for k in named if k != "l0"}
    assert max(rest) - min(rest) < 1e-12  # the others share one shift


@pytest.mark.parametrize(
    "offsets, match",
    [
        ({"w_proj": 0.1}, "'w_proj' matches no linear of block 3"),
        ({"a": 0.1, "b": 0.1}, "every linear of block 3 is offset"),
        ({"a": 0.55}, "block 3 a would get sparsity 1.050"),
    ],
)
def test_bad_offsets_name_the_block(offsets, match):
    with pytest.raises(ConfigError, match=match):
        linear_sparsities({"a": 100, "b": 100}, 0.5, offsets, where="block 3")


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_pruned_model_has_the_offsets_and_the_total(calib, method):
    model = tiny_llama(layers=2)
    report = prune_model(model, LLMPrune(method, 0.5, sparsity_offsets=QK), calib)
    for block in layers(model):
        linears = block_linears(block)
        sizes = {name: m.weight.numel() for name, m in linears.items()}
        want = linear_sparsities(sizes, 0.5, QK)
        assert want["self_attn.q_proj"] == pytest.approx(0.7)
        for name, m in linears.items():
            assert _zeros(m) == pytest.approx(want[name], abs=0.01), name
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert report["config"]["sparsity_offsets"] == QK


def test_offsets_compose_with_owl_and_stream_like_in_memory(calib, tmp_path):
    dense = tiny_llama(layers=3)
    dense.save_pretrained(tmp_path / "src", max_shard_size="100KB")
    config = LLMPrune("wanda", 0.5, owl=0.1, sparsity_offsets=QK)
    in_memory = copy.deepcopy(dense)
    report = prune_model(in_memory, config, calib)
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
    prune_streaming(tmp_path / "src", tmp_path / "out", config, calib)
    streamed = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    a, b = in_memory.state_dict(), streamed.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="wanda", nm="2:4", sparsity_offsets=QK), "sparsity_offsets applies"),
        (dict(method="width", sparsity_offsets=QK), "does not apply|sparsity_offsets applies"),
        (dict(method="wanda", sparsity_offsets={"q_proj": 1.0}), r"offsets in \(-1, 1\)"),
        (dict(method="wanda", sparsity_offsets={"q_proj": True}), r"offsets in \(-1, 1\)"),
        (dict(method="wanda", sparsity_offsets={"": 0.1}), "got the key"),
        (dict(method="wanda", sparsity_offsets={}), "maps linear names"),
        (dict(method="wanda", sparsity_offsets=[0.1]), "maps linear names"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LLMPrune(**kwargs)


@pytest.mark.parametrize(
    "offsets, match",
    [({"w_proj": 0.1}, "matches no linear of block 0"), ({"q_proj": 0.6}, "outside")],
)
def test_offsets_that_do_not_fit_the_model_change_nothing(calib, tmp_path, offsets, match):
    model = tiny_llama(layers=2)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=match):
        prune_model(model, LLMPrune("wanda", 0.5, sparsity_offsets=offsets), calib)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.save_pretrained(tmp_path / "src")
    with pytest.raises(ConfigError, match=match):
        prune_streaming(
            tmp_path / "src", tmp_path / "out", LLMPrune("wanda", 0.5, sparsity_offsets=offsets),
            calib,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_cli_sparsity_offsets(tmp_path, capsys):
    from test_llm import _write_model_dir

    from netslim.cli.main import main

    src = _write_model_dir(tmp_path / "m")
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 20)
    common = ["llm", str(src), "--method", "wanda", "--calib", str(text), "--seq-len", "32",
              "--calib-samples", "4"]  # fmt: skip
    out = tmp_path / "out"
    assert main([*common, "--sparsity-offsets", "q_proj=0.2,k_proj=0.2", "--out", str(out)]) == 0
    report = json.loads((out / "netslim_llm.json").read_text())["report"]
    assert report["config"]["sparsity_offsets"] == QK
    bad = tmp_path / "bad"
    for value, says in (
        ("q_proj=1.5", "offsets in (-1, 1)"),
        ("q_proj", "NAME=OFFSET"),
        ("q_proj=0.1,q_proj=0.2", "NAME=OFFSET"),
        ("w_proj=0.1", "matches no linear"),
    ):
        capsys.readouterr()
        assert main([*common, "--sparsity-offsets", value, "--out", str(bad)]) == 2, value
        assert says in capsys.readouterr().err and not bad.exists(), value
