"""netslim.llm on tiny random LLaMA (GQA) and GPT-2 configs: every method end to end, SparseGPT
reconstruction, width/depth bookkeeping, reload, streaming parity, bad input, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tiny_hf  # noqa: E402
from pruned import zero_fraction  # noqa: E402

import netslim  # noqa: E402
from netslim.errors import ConfigError, DataError, UnsupportedModelError  # noqa: E402
from netslim.llm import (  # noqa: E402
    LLMPrune,
    generate_check,
    load,
    perplexity,
    prune_model,
    prune_streaming,
    save,
    token_sequences,
)
from netslim.llm.arch import layers  # noqa: E402
from netslim.llm.calibration import LayerStats  # noqa: E402
from netslim.llm.io import MANIFEST  # noqa: E402
from netslim.llm.methods.sparsegpt import sparsegpt  # noqa: E402
from netslim.unstructured.nm import check_nm  # noqa: E402

VOCAB = 256


def tiny_llama(layers: int = 3, intermediate: int = 128) -> torch.nn.Module:
    return tiny_hf.tiny_llama(
        hidden_size=64, intermediate_size=intermediate, num_hidden_layers=layers,
        vocab_size=VOCAB, max_position_embeddings=128, tie_word_embeddings=False,
    )  # fmt: skip


def tiny_gpt2() -> torch.nn.Module:
    return tiny_hf.tiny_gpt2(bos_token_id=0, eos_token_id=0)


def byte_tokenizer():
    """A 256-entry byte-level tokenizer built offline (one token per ASCII character)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=sorted(alphabet)[0])


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def eval_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (160,), generator=torch.Generator().manual_seed(2))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _linears(model):
    from netslim.llm.arch import block_linears, layers, weight_oi

    return [weight_oi(m) for b in layers(model) for m in block_linears(b).values()]


@pytest.mark.parametrize(
    "config",
    [
        LLMPrune("magnitude", 0.5),
        LLMPrune("wanda", 0.5),
        LLMPrune("sparsegpt", 0.5),
        LLMPrune("sparsegpt", nm="2:4"),
        LLMPrune("wanda", nm="4:8"),
        LLMPrune("width", 0.5),
        LLMPrune("depth", remove=1),
    ],
    ids=lambda c: f"{c.method}-{c.nm or c.sparsity}",
)
def test_pipeline_llama(config, calib, eval_ids):
    model = tiny_llama()
    report = netslim.prune_(model, config, calibration=calib)
    if config.method in ("magnitude", "wanda", "sparsegpt"):
        assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
        assert report["params"]["after"] == report["params"]["before"]
    if config.nm:
        assert all(check_nm(w, *config.nm) for w in _linears(model))
    if config.method == "wanda":  # compared per output row: every row is exactly half zeros
        assert all(bool(((w == 0).sum(1) == w.shape[1] // 2).all()) for w in _linears(model))
    if config.method in ("width", "depth"):
        assert report["params"]["after"] < report["params"]["before"]
    # the model itself, not the report
    if config.method in ("width", "depth"):
        dense = sum(p.numel() for p in tiny_llama().parameters())
        assert sum(p.numel() for p in model.parameters()) == report["params"]["after"] < dense
    else:
        assert zero_fraction(_linears(model)) == pytest.approx(0.5, abs=0.01)
    ppl = perplexity(model, eval_ids, seq_len=32, stride=16)
    assert torch.isfinite(torch.tensor(ppl["ppl"])) and ppl["tokens_scored"] == 159
    assert generate_check(model, calib[0, :5]).numel() == 8


@pytest.mark.parametrize(
    "config", [LLMPrune("wanda"), LLMPrune("sparsegpt", nm="2:4"), LLMPrune("depth", remove=1)]
)
def test_pipeline_gpt2(config, calib, tmp_path):
    model = tiny_gpt2()
    blocks = len(model.transformer.h)
    report = prune_model(model, config, calib)
    assert report["family"] == "gpt2"
    if config.method == "depth":
        assert len(model.transformer.h) == blocks - 1
    else:  # the weights measured, not the report: a no-op prune leaves them dense
        weights = _linears(model)
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert zeros == pytest.approx(0.5, abs=0.01)
        if config.nm:
            assert all(check_nm(w, *config.nm) for w in weights)
    assert generate_check(model, calib[0, :5]).numel() == 8
    save(model, tmp_path / "out", report)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(_logits(again, calib[:1]), _logits(model, calib[:1]))


def test_sparsegpt_reconstruction_beats_masking():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(64, 64, generator=gen)
    x = torch.randn(512, 64, generator=gen) @ mix  # correlated inputs: where OBS updates help
    w = torch.randn(32, 64, generator=gen)
    stats = LayerStats(64, {"gram"})
    stats.add(x)
    for cfg in (LLMPrune("sparsegpt", 0.5), LLMPrune("sparsegpt", nm="2:4")):
        pruned = sparsegpt(w, stats, cfg)
        mask = pruned != 0
        assert (~mask).float().mean() == pytest.approx(0.5, abs=0.01)
        err_sparsegpt = (x @ w.t() - x @ pruned.t()).norm()
        err_masked = (x @ w.t() - x @ (w * mask).t()).norm()
        assert err_sparsegpt < 0.9 * err_masked


def test_layer_stats_sums_match_float64_across_flushes():
    """The float32 partial sums are folded into the float64 totals every FLUSH_TOKENS tokens
    and on read: the Gram matrix and the squares match a float64 reference to float32 accuracy."""
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 700, 16, generator=gen) for _ in range(5)]  # crosses 2 flushes
    stats = LayerStats(16, {"gram", "sq"})
    for x in batches:
        stats.add(x)
    xs = torch.cat([x.reshape(-1, 16) for x in batches]).double()
    assert stats.tokens == xs.shape[0]
    torch.testing.assert_close(stats.gram, xs.t() @ xs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stats.sq, (xs * xs).sum(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stats.hessian(), (2 / xs.shape[0] * xs.t() @ xs).float())
    stats.add(batches[0])  # adding after a read keeps counting
    xs = torch.cat([xs, batches[0].reshape(-1, 16).double()])
    torch.testing.assert_close(stats.gram, xs.t() @ xs, rtol=1e-4, atol=1e-4)


def test_width_gqa_and_config(calib, tmp_path):
    model = tiny_llama()
    report = prune_model(model, LLMPrune("width", 0.25, head_sparsity=0.5), calib)
    cfg = model.config
    assert (cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (96, 2, 1)
    assert cfg.head_dim == 16 and report["config_updated"] and report["loader"] == "transformers"
    for block in model.model.layers:
        attn = block.self_attn
        assert attn.q_proj.weight.shape == (32, 64) and attn.o_proj.weight.shape == (64, 32)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (16, 64)
        assert block.mlp.gate_proj.weight.shape[0] == block.mlp.down_proj.weight.shape[1] == 96
    save(model, tmp_path / "w", report)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "w").eval()
    torch.testing.assert_close(_logits(again, calib[:2]), _logits(model, calib[:2]))


def test_width_correction_reduces_error(calib):
    dense = tiny_llama()
    target = _logits(dense, calib)
    errors = {}
    for correct in (False, True):
        model = copy.deepcopy(dense)
        prune_model(model, LLMPrune("width", 0.5, head_sparsity=0.0, correct=correct), calib)
        errors[correct] = float((_logits(model, calib) - target).square().mean())
    assert errors[True] < errors[False]


def test_uneven_widths_reload_with_netslim_loader(calib, tmp_path):
    model = tiny_llama()
    report = prune_model(model, LLMPrune("width", 0.5, layer_sparsity=[0.25, 0.5, 0.75]), calib)
    assert report["loader"] == "netslim" and not report["config_updated"]
    assert [w["intermediate_size"] for w in report["widths"]] == [96, 64, 32]
    save(model, tmp_path / "u", report)
    assert json.loads((tmp_path / "u" / MANIFEST).read_text())["loader"] == "netslim"
    again = load(tmp_path / "u")
    torch.testing.assert_close(_logits(again, calib[:2]), _logits(model, calib[:2]))
    assert generate_check(again, calib[0, :4]).numel() == 8


def test_depth_layer_idx_generate_and_reload(calib, tmp_path):
    model = tiny_llama(layers=4)
    report = prune_model(model, LLMPrune("depth", 0.5), calib)
    assert len(report["removed_blocks"]) == 2 and len(report["block_influence"]) == 4
    assert model.config.num_hidden_layers == 2
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1]
    prompt = calib[:1, :6]
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        plain = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)  # the KV cache indexes blocks by layer_idx
    save(model, tmp_path / "d", report)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "d").eval()
    assert again.config.num_hidden_layers == 2
    torch.testing.assert_close(_logits(again, calib[:2]), _logits(model, calib[:2]))


def test_same_shape_round_trip(calib, tmp_path):
    model = tiny_llama()
    report = prune_model(model, LLMPrune("sparsegpt", nm="2:4"), calib)
    save(model, tmp_path / "s", report, tokenizer=byte_tokenizer())
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    torch.testing.assert_close(_logits(again, calib[:2]), _logits(model, calib[:2]))
    assert all(check_nm(w, 2, 4) for w in _linears(again))


@pytest.mark.parametrize(
    "config",
    [LLMPrune("wanda"), LLMPrune("sparsegpt", nm="2:4"), LLMPrune("depth", remove=1)],
    ids=["wanda", "sparsegpt-2:4", "depth"],
)
def test_streaming_matches_in_memory(config, calib, tmp_path):
    dense = tiny_llama()
    dense.save_pretrained(tmp_path / "src", max_shard_size="100KB")
    assert (tmp_path / "src" / "model.safetensors.index.json").is_file()
    in_memory = copy.deepcopy(dense)
    prune_model(in_memory, config, calib)
    report = prune_streaming(tmp_path / "src", tmp_path / "out", config, calib)
    streamed = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    a, b = in_memory.state_dict(), streamed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    assert report["streamed"] and report["blocks"]["after"] == len(in_memory.model.layers)


def test_bad_inputs(calib, tmp_path):
    model = tiny_llama(intermediate=130)  # down_proj input 130 is not a multiple of 4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="divisible by 4"):
        prune_model(model, LLMPrune("wanda", nm="2:4"), calib)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        LLMPrune("wanda", sparsity=1.0)
    with pytest.raises(ConfigError, match="at least one"):
        prune_model(model, LLMPrune("depth", remove=3), calib)
    with pytest.raises(ConfigError, match="needs calibration"):
        prune_model(model, LLMPrune("sparsegpt"), None)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(DataError, match="fewer than one sequence"):
        token_sequences(byte_tokenizer(), "too short", 64)
    bert = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(UnsupportedModelError, match="not a supported decoder-only"):
        prune_streaming(tmp_path / "bert", tmp_path / "never", LLMPrune("wanda"), calib)
    with pytest.raises(UnsupportedModelError, match="width pruning supports"):
        prune_model(tiny_gpt2(), LLMPrune("width"), calib)
    assert not (tmp_path / "never").exists()


def _write_model_dir(path: Path) -> Path:
    model = tiny_llama(layers=2)
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def test_cli(tmp_path, capsys):
    from netslim.cli.main import main

    src = _write_model_dir(tmp_path / "m")
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 20)
    out = tmp_path / "out"
    common = ["--calib", str(text), "--eval", str(text), "--seq-len", "32", "--calib-samples", "4"]
    assert (
        main(["llm", str(src), "--method", "sparsegpt", "--nm", "2:4", *common, "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "perplexity protocol: windows of 32 tokens" in printed and "from_pretrained" in printed
    assert "generate(): ok" in printed
    assert json.loads((out / MANIFEST).read_text())["report"]["perplexity"]["pruned"]["ppl"] > 0
    saved = _linears(load(out))
    assert all(check_nm(w, 2, 4) for w in saved) and zero_fraction(saved) == 0.5
    assert (
        main(
            [
                "llm",
                str(src),
                "--method",
                "depth",
                "--remove",
                "1",
                "--stream",
                *common,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "streamed from disk" in printed
    assert "zeros in block linear weights" not in printed  # removed blocks: no zeros to count
    assert load(out).config.num_hidden_layers == len(layers(load(out))) == 1  # of 2

    short = tmp_path / "short.txt"
    short.write_text("tiny")
    bad = tmp_path / "bad"
    assert (
        main(
            [
                "llm",
                str(src),
                "--method",
                "wanda",
                "--calib",
                str(short),
                "--seq-len",
                "32",
                "--out",
                str(bad),
            ]
        )
        == 2
    )
    assert "fewer than one sequence" in capsys.readouterr().err
    assert (
        main(["llm", str(src), "--sparsity", "1.0", "--calib", str(text), "--out", str(bad)]) == 2
    )
    assert main(["llm", str(tmp_path), "--calib", str(text), "--out", str(bad)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert not bad.exists()


def test_cli_refuses_what_the_model_cannot_take_before_any_pass(tmp_path, capsys, monkeypatch):
    """More blocks to remove than the model has fails before the dense perplexity pass (it used
    to come after it); a tokenizer whose ids overflow the model's vocabulary is one line, exit 2
    (it was an index error inside the first forward)."""
    import netslim.llm.eval as llm_eval
    from netslim.cli.main import main

    passes: list[int] = []
    monkeypatch.setattr(llm_eval, "perplexity", lambda *a, **k: passes.append(1))
    src = _write_model_dir(tmp_path / "m")
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 20)
    common = ["--calib", str(text), "--eval", str(text), "--seq-len", "32", "--out"]
    bad = tmp_path / "bad"
    assert main(["llm", str(src), "--method", "depth", "--remove", "5", *common, str(bad)]) == 2
    assert "cannot remove 5 of 2 blocks" in capsys.readouterr().err and passes == []
    other = tmp_path / "other"
    tiny_hf.tiny_llama(vocab_size=100).save_pretrained(other)
    byte_tokenizer().save_pretrained(other)  # ids up to 255
    assert main(["llm", str(other), "--method", "wanda", *common, str(bad)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("netslim: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "has 100 entries: the tokenizer is not this model's" in errors[0]
    assert passes == [] and not bad.exists()


def test_cli_reports_what_each_new_step_did_and_cost(tmp_path, capsys):
    """OWL, block reconstruction and recovery each print what they did (the block sparsities,
    the fit's error ratio, the distillation loss) and the time line splits the run by step; the
    command printed only the total before, so a user could not tell which step moved the
    perplexity or what it cost."""
    from netslim.cli.main import main

    src = _write_model_dir(tmp_path / "m")
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 40)
    out = tmp_path / "out"
    args = ["llm", str(src), "--method", "sparsegpt", "--owl", "0.08", "--reconstruct", "3",
            "--recover", "2", "--calib", str(text), "--seq-len", "32", "--calib-samples", "8",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / MANIFEST).read_text())["report"]
    owl = report["owl"]["block_sparsity"]
    assert f"OWL (lambda 0.08, M 5): block sparsity {min(owl):.2f}-{max(owl):.2f}" in printed
    fit = report["reconstruction"]
    pairs = zip(fit["first_loss"], fit["last_loss"], strict=True)
    ratio = sum(b / a for a, b in pairs) / len(owl)
    assert (
        "block reconstruction: 3 steps per block of 4 sequences; block-output error at the last "
        f"step / the first: {ratio:.2f} (mean over blocks)"
    ) in printed
    rec = report["recovery"]
    assert f"recovery: 2 steps, {rec['tokens']:,} tokens; KL(dense || pruned) " in printed
    time_line = next(line for line in printed.splitlines() if line.startswith("time: "))
    total, _, parts = time_line.removeprefix("time: ").partition(" s, of which ")
    assert float(total) == round(report["seconds"], 1)
    assert [part.split()[0] for part in parts.split(", ")] == list(report["costs"])
    assert {"prune", "reconstruct", "owl", "recover"} <= set(report["costs"])


def test_cli_warns_when_the_text_gives_fewer_windows_than_asked(tmp_path, capsys):
    """--calib-samples 64 on a text of 34 windows calibrated on 34 and said nothing: the printed
    count was the only hint that the text was short."""
    from netslim.cli.main import main

    src = _write_model_dir(tmp_path / "m")
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 20)  # 1100 bytes
    args = ["llm", str(src), "--method", "wanda", "--calib", str(text), "--seq-len", "32"]
    assert main([*args, "--calib-samples", "64", "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "calibration: 34 sequences x 32 tokens" in captured.out
    warning = f"{text} gives 34 windows of 32 tokens, fewer than --calib-samples 64"
    assert [line for line in captured.err.splitlines() if warning in line]
    assert main([*args, "--calib-samples", "34", "--out", str(tmp_path / "b")]) == 0
    assert "fewer than --calib-samples" not in capsys.readouterr().err


def test_cli_refuses_windows_the_job_cannot_use_before_pruning(tmp_path, capsys, monkeypatch):
    """A perplexity stride longer than the window failed only at the evaluation: with --stream
    after the whole model was pruned and written; a window longer than the model's context
    (max_position_embeddings) ran far beyond what the model was trained on (SmolLM2 with
    --seq-len 100000 calibrated on two 100,000-token sequences). Both are one line, exit 2,
    before the model is pruned."""
    import netslim.llm.streaming as streaming
    from netslim.cli.main import main

    pruned: list[str] = []
    monkeypatch.setattr(streaming, "prune_streaming", lambda *a, **k: pruned.append("stream"))
    monkeypatch.setattr("netslim.api.prune_", lambda *a, **k: pruned.append("memory"))
    src = _write_model_dir(tmp_path / "m")  # max_position_embeddings 128
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 40)
    bad = tmp_path / "bad"
    common = ["--calib", str(text), "--eval", str(text), "--out", str(bad)]
    for extra, words in (
        (["--stream", "--seq-len", "32", "--stride", "64"], "--stride 64 is longer than"),
        (["--seq-len", "32", "--stride", "64"], "--stride 64 is longer than"),
        (["--seq-len", "256"], "--seq-len 256 is longer than the model's context (128"),
        (["--stream", "--seq-len", "256"], "--seq-len 256 is longer than the model's context"),
    ):
        assert main(["llm", str(src), "--method", "wanda", *common, *extra]) == 2, extra
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("netslim: error:")]
        assert len(errors) == 1 and words in errors[0], (extra, err)
        assert pruned == [] and not bad.exists()


def test_shared_inputs_share_stats_only_when_identical(calib):
    """q/k/v read one tensor, gate/up another; a freed tensor's reused address must not alias."""
    from netslim.llm.calibration import capture_inputs, collecting, run_block

    model = tiny_llama(layers=1)
    inputs = capture_inputs(model, calib)
    block = model.model.layers[0]
    seen = []
    handle = block.post_attention_layernorm.register_forward_hook(
        lambda m, a, out: seen.append(out)
    )
    want = {
        n: {"sq"} for n in ("self_attn.q_proj", "self_attn.k_proj", "mlp.gate_proj", "mlp.up_proj")
    }
    with collecting(block, want) as stats:
        run_block(block, inputs)
    handle.remove()
    assert stats["self_attn.q_proj"] is stats["self_attn.k_proj"]
    assert stats["mlp.gate_proj"] is stats["mlp.up_proj"] is not stats["self_attn.q_proj"]
    expected = sum(x.reshape(-1, 64).double().square().sum(0) for x in seen)
    torch.testing.assert_close(stats["mlp.up_proj"].sq, expected)


def test_streaming_gpt2_matches_in_memory(calib, tmp_path):
    dense = tiny_gpt2()
    dense.save_pretrained(tmp_path / "src")
    in_memory = copy.deepcopy(dense)
    prune_model(in_memory, LLMPrune("sparsegpt"), calib)
    prune_streaming(tmp_path / "src", tmp_path / "out", LLMPrune("sparsegpt"), calib)
    streamed = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(_logits(streamed, calib[:2]), _logits(in_memory, calib[:2]))
