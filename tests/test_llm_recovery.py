"""The LLM quality steps on tiny random models: OWL block sparsities, block reconstruction with
fixed masks, and distillation recovery after width/depth pruning (reload, all-or-nothing)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tiny_hf  # noqa: E402

from netslim.errors import ConfigError  # noqa: E402
from netslim.llm import LLMPrune, prune_model, prune_streaming  # noqa: E402
from netslim.llm.arch import block_linears, layers  # noqa: E402
from netslim.llm.distill import cycle_batches, distill  # noqa: E402
from netslim.llm.owl import owl_sparsities  # noqa: E402
from netslim.llm.reconstruct import DEFAULT_LR, reconstruct_block  # noqa: E402
from netslim.llm.sequential import block_seed  # noqa: E402
from netslim.unstructured.nm import check_nm  # noqa: E402

VOCAB = 256


def tiny_llama(layers: int = 4) -> torch.nn.Module:
    return tiny_hf.tiny_llama(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, vocab_size=VOCAB,
        max_position_embeddings=128, tie_word_embeddings=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randint(0, VOCAB, (8, 32), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _kl(teacher, student, ids) -> float:
    t = torch.log_softmax(_logits(teacher, ids), -1)
    s = torch.log_softmax(_logits(student, ids), -1)
    return float((t.exp() * (t - s)).sum(-1).mean())


def test_owl_sparsities_keep_the_mean_and_favour_outlier_blocks():
    ratios = [0.01, 0.05, 0.02, 0.09]
    s = owl_sparsities(ratios, 0.5, 0.08)
    assert sum(s) / len(s) == pytest.approx(0.5)
    assert max(s) - min(s) == pytest.approx(0.16)
    assert s.index(min(s)) == 3 and s.index(max(s)) == 0  # most outliers: least pruned
    assert owl_sparsities([0.1, 0.1], 0.5, 0.08) == [0.5, 0.5]


def test_owl_prunes_blocks_unevenly_with_the_same_total(calib):
    model = tiny_llama()
    report = prune_model(model, LLMPrune("wanda", 0.5, owl=0.1), calib)
    planned = report["owl"]["block_sparsity"]
    assert len(set(round(x, 6) for x in planned)) > 1
    for block, target in zip(layers(model), planned, strict=True):
        ws = [m.weight for m in block_linears(block).values()]
        zeros = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
        assert zeros == pytest.approx(target, abs=0.01)
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert "owl" in report["costs"]


@pytest.mark.parametrize("nm", [None, "2:4", "4:8"])
def test_reconstruction_keeps_masks_and_fits_the_dense_model(calib, nm):
    dense = tiny_llama()
    plain = copy.deepcopy(dense)
    prune_model(plain, LLMPrune("sparsegpt", nm=nm), calib)
    fitted = copy.deepcopy(dense)
    report = prune_model(
        fitted, LLMPrune("sparsegpt", nm=nm, reconstruct=30, reconstruct_lr=1e-3), calib
    )
    # block 0 sees the same inputs either way: same mask; later blocks see the fitted blocks'
    # outputs, so their masks may differ, but never their zero counts
    for i, (a, b) in enumerate(zip(layers(plain), layers(fitted), strict=True)):
        for (name, la), lb in zip(block_linears(a).items(), block_linears(b).values(), strict=True):
            if i == 0:
                assert torch.equal(la.weight == 0, lb.weight == 0), name
            assert int((la.weight == 0).sum()) == int((lb.weight == 0).sum()), name
            if nm:
                assert check_nm(lb.weight, *map(int, nm.split(":")))
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
    first, last = report["reconstruction"]["first_loss"], report["reconstruction"]["last_loss"]
    assert all(b < a for a, b in zip(first, last, strict=True))
    assert _kl(dense, fitted, calib) < _kl(dense, plain, calib)
    assert {"prune", "reconstruct", "dense_targets"} <= set(report["costs"])


@pytest.mark.parametrize(
    "knob", [{"reconstruct": 3, "reconstruct_batch": 2}, {"recover": 2, "recover_batch": 3}]
)
def test_seed_orders_the_new_steps_and_repeats(calib, knob):
    """``seed`` changes the order of the calibration sequences in reconstruction and in
    recovery (so their result), and the same seed gives the same model."""

    def pruned(seed: int) -> list[torch.Tensor]:
        model = tiny_llama(layers=2)
        config = LLMPrune("sparsegpt", seed=seed, **knob)
        report = prune_model(model, config, calib)
        assert report["config"]["seed"] == seed
        return [p.detach().clone() for p in model.parameters()]

    torch.manual_seed(0)
    first = pruned(0)
    torch.manual_seed(0)
    again = pruned(0)
    torch.manual_seed(0)
    other = pruned(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert block_seed(0, 7) == 7 and block_seed(2, 7) == 2007


@pytest.mark.parametrize("knob", [{"reconstruct": 4}, {"recover": 2}, {"owl": 0.1}])
def test_magnitude_reads_calibration_where_a_step_needs_it(calib, knob):
    """Magnitude scores need no data, but OWL weighs by input norms, and reconstruction and
    recovery fit to the dense model on it: they run (they were once skipped without a word)
    and, without text, are refused before any work."""
    dense = tiny_llama(layers=4)
    plain, fitted = copy.deepcopy(dense), copy.deepcopy(dense)
    prune_model(plain, LLMPrune("magnitude", 0.5), calib)
    report = prune_model(fitted, LLMPrune("magnitude", 0.5, **knob), calib)
    assert report["calibration"]["tokens"] == calib.numel()
    assert set(knob) & set(report["costs"])
    if "owl" in knob:
        assert len(set(report["owl"]["block_sparsity"])) > 1
    else:
        assert _kl(dense, fitted, calib) < _kl(dense, plain, calib)
    untouched = copy.deepcopy(dense)
    with pytest.raises(ConfigError, match=f"'magnitude' with {next(iter(knob))} needs calib"):
        prune_model(untouched, LLMPrune("magnitude", 0.5, **knob))
    assert all(
        torch.equal(a, b) for a, b in zip(untouched.parameters(), dense.parameters(), strict=True)
    )


def test_owl_pass_targets_equal_recomputed_ones(calib, monkeypatch):
    """With OWL on, the dense pass's kept block outputs replace the dense forward per block:
    the result is the same, bit for bit, as recomputing them (the fallback when too big)."""
    from netslim.llm import prune as llm_prune

    dense = tiny_llama()
    cfg = LLMPrune("sparsegpt", 0.5, owl=0.1, reconstruct=5, reconstruct_lr=1e-3)
    kept, recomputed = copy.deepcopy(dense), copy.deepcopy(dense)
    fast = prune_model(kept, cfg, calib)
    monkeypatch.setattr(llm_prune, "KEEP_TARGETS_BYTES", 0)
    slow = prune_model(recomputed, cfg, calib)
    assert "dense_targets" not in fast["costs"] and slow["costs"]["dense_targets"] > 0
    for a, b in zip(kept.parameters(), recomputed.parameters(), strict=True):
        assert torch.equal(a, b)


def _half_pruned_block(calib):
    """A one-block model's block with half of each linear's weights zeroed at random, its
    captured calibration inputs, its dense output (the target) and the keep-masks."""
    from netslim.llm.calibration import capture_inputs, run_block

    model = tiny_llama(layers=1)
    inputs = capture_inputs(model, calib)
    block = layers(model)[0]
    target = run_block(block, inputs)
    masks = {}
    with torch.no_grad():
        for m in block_linears(block).values():
            masks[m.weight] = torch.rand_like(m.weight) > 0.5
            m.weight.mul_(masks[m.weight])
    return block, inputs, target, masks


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-3), ("adafactor", 1e-2)])
def test_reconstruct_block_holds_the_mask(calib, optimizer, lr):
    block, inputs, target, masks = _half_pruned_block(calib)
    result = reconstruct_block(
        block, inputs, target, masks, steps=20, lr=lr, batch=4, optimizer=optimizer
    )
    assert result["last_loss"] < result["first_loss"]
    for name, m in block_linears(block).items():
        assert not m.weight[~masks[m.weight]].any(), name
    assert all(p.requires_grad and p.grad is None for p in block.parameters())
    # no step hook is left behind: a later backward keeps its gradients
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    out = block(inputs.hidden, *inputs.args, **inputs.kwargs)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    assert all(torch.equal(before[n], p) for n, p in block.named_parameters())


def _linear_output_dtypes(module: torch.nn.Module) -> tuple[set, list]:
    """Record the dtype of every linear's output under ``module``: (dtypes, hook handles)."""
    seen: set = set()
    handles = [
        m.register_forward_hook(lambda _m, _a, out: seen.add(out.dtype))
        for m in module.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    return seen, handles


@pytest.mark.parametrize("optimizer", ["adam", "adafactor"])
def test_reconstruct_block_in_bfloat16_follows_its_weights(calib, optimizer):
    """Every step's forward runs in bf16 on the weights as they are after the last step: the
    loss on one fixed batch falls (a bf16 copy cached across steps would hold it still), and the
    weights, masks and dtype come back float32."""
    block, inputs, target, masks = _half_pruned_block(calib)
    seen, handles = _linear_output_dtypes(block)
    result = reconstruct_block(
        block, inputs, target, masks, steps=6, lr=DEFAULT_LR[optimizer], batch=len(calib),
        optimizer=optimizer, train_dtype="bfloat16",
    )  # fmt: skip
    for h in handles:
        h.remove()
    assert seen == {torch.bfloat16}
    assert result["last_loss"] < 0.9 * result["first_loss"]
    for name, m in block_linears(block).items():
        assert m.weight.dtype == torch.float32 and not m.weight[~masks[m.weight]].any(), name


def _teacher_and_damaged_student():
    """A two-block model and a copy whose second block's parameters are halved."""
    teacher = tiny_llama(layers=2)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in layers(student)[1].parameters():
            p.mul_(0.5)
    return teacher, student


def test_distill_in_bfloat16(calib):
    teacher, student = _teacher_and_damaged_student()
    before = _kl(teacher, student, calib)
    seen, handles = _linear_output_dtypes(student)
    result = distill(
        student, teacher, cycle_batches(calib, len(calib)), steps=8, lr=1e-3, warmup=1,
        train_dtype="bfloat16",
    )  # fmt: skip
    for h in handles:
        h.remove()
    assert seen == {torch.bfloat16}
    assert _kl(teacher, student, calib) < 0.5 * before and result["steps"] == 8
    assert all(p.dtype == torch.float32 for p in student.parameters())


@pytest.mark.parametrize("optimizer", ["adam", "adafactor"])
def test_new_steps_stream_like_in_memory(calib, tmp_path, optimizer):
    dense = tiny_llama(layers=3)
    dense.save_pretrained(tmp_path / "src", max_shard_size="100KB")
    config = LLMPrune(
        "wanda", 0.5, owl=0.1, reconstruct=5, reconstruct_batch=4, reconstruct_optimizer=optimizer
    )
    in_memory = copy.deepcopy(dense)
    prune_model(in_memory, config, calib)
    report = prune_streaming(tmp_path / "src", tmp_path / "out", config, calib)
    streamed = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    a, b = in_memory.state_dict(), streamed.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    assert report["owl"]["block_sparsity"] and "reconstruct" in report["costs"]


def test_streaming_reconstructs_in_bfloat16(calib, tmp_path, monkeypatch):
    """The streaming path hands ``train_dtype`` to every block's fit. Its result is not the
    in-memory one to float32 precision (bf16 rounding moves the next block's Wanda scores, and a
    few borderline weights change sides) but computes nearly the same function."""
    from netslim.llm import reconstruct

    asked: list[str] = []
    real = reconstruct.forward_precision

    def recording(train_dtype, device):
        asked.append(train_dtype)
        return real(train_dtype, device)

    monkeypatch.setattr(reconstruct, "forward_precision", recording)
    dense = tiny_llama(layers=3)
    dense.save_pretrained(tmp_path / "src", max_shard_size="100KB")
    config = LLMPrune(
        "wanda", 0.5, reconstruct=5, reconstruct_batch=4, reconstruct_optimizer="adam",
        train_dtype="bfloat16",
    )  # fmt: skip  # both paths the same optimizer (streaming would pick Adafactor)
    in_memory = copy.deepcopy(dense)
    prune_model(in_memory, config, calib)
    asked.clear()
    report = prune_streaming(tmp_path / "src", tmp_path / "out", config, calib)
    assert asked == ["bfloat16"] * 3 * 5 and report["config"]["train_dtype"] == "bfloat16"
    streamed = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert all(p.dtype == torch.float32 for p in streamed.parameters())
    torch.testing.assert_close(
        _logits(streamed, calib), _logits(in_memory, calib), atol=1e-2, rtol=0.0
    )


@pytest.mark.parametrize(
    "config",
    [LLMPrune("width", 0.25, head_sparsity=0.5), LLMPrune("depth", remove=1)],
    ids=["width", "depth"],
)
def test_recovery_distills_and_reloads(config, calib, tmp_path):
    dense = tiny_llama()
    plain = copy.deepcopy(dense)
    prune_model(plain, config, calib)
    recovered = copy.deepcopy(dense)
    rec = copy.copy(config)
    rec.recover, rec.recover_lr, rec.recover_batch = 40, 3e-3, 4
    report = prune_model(recovered, rec, calib)
    assert (
        report["recovery"]["steps"] == 40
        and report["recovery"]["loss_last"] < report["recovery"]["loss_first"]
    )
    assert _kl(dense, recovered, calib) < _kl(dense, plain, calib)
    assert recovered.model.embed_tokens.weight.equal(dense.model.embed_tokens.weight)
    assert all(p.requires_grad for p in recovered.parameters())  # flags as they were
    recovered.save_pretrained(tmp_path / "r")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "r").eval()
    torch.testing.assert_close(_logits(again, calib[:2]), _logits(recovered, calib[:2]))
    out = again.generate(calib[:1, :5], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape[1] == 9


@pytest.mark.parametrize("nm", [None, "2:4"], ids=["unstructured", "2:4"])
def test_per_weight_recovery_keeps_the_masks(nm, calib, tmp_path):
    dense = tiny_llama()
    plain = copy.deepcopy(dense)
    prune_model(plain, LLMPrune("sparsegpt", 0.5, nm=nm), calib)
    recovered = copy.deepcopy(dense)
    config = LLMPrune("sparsegpt", 0.5, nm=nm, recover=40, recover_lr=3e-3, recover_batch=4)
    report = prune_model(recovered, config, calib)
    assert report["recovery"]["loss_last"] < report["recovery"]["loss_first"]
    assert {"recover", "prune"} <= report["costs"].keys()
    changed = 0
    for block_p, block_r in zip(layers(plain), layers(recovered), strict=True):
        for (name, a), b in zip(
            block_linears(block_p).items(), block_linears(block_r).values(), strict=True
        ):
            assert torch.equal(a.weight == 0, b.weight == 0), name  # the same zeros, exactly
            changed += int(not torch.equal(a.weight, b.weight))
            if nm:
                assert check_nm(b.weight.detach(), 2, 4)
    assert changed and report["sparsity"] == pytest.approx(0.5)
    assert _kl(dense, recovered, calib) < _kl(dense, plain, calib)
    recovered.save_pretrained(tmp_path / "r")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "r").eval()
    torch.testing.assert_close(_logits(again, calib[:2]), _logits(recovered, calib[:2]))


def test_failed_recovery_leaves_the_model_unchanged(calib):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = calib.clone()
    bad[0, 0] = VOCAB + 5  # out of the embedding's range: fails inside the distillation
    with pytest.raises(IndexError):
        prune_model(model, LLMPrune("depth", remove=1, recover=3), calib, recovery=bad)
    assert model.config.num_hidden_layers == 4 and len(layers(model)) == 4
    after = model.state_dict()
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before)


def test_distill_reads_batches_from_an_iterator(calib):
    teacher, student = _teacher_and_damaged_student()
    stream = (calib[i : i + 2] for i in range(0, 8, 2))  # a generator: never all in memory
    result = distill(student, teacher, stream, steps=4, lr=1e-3, warmup=1)
    assert result["tokens"] == 4 * 2 * 32
    batches = cycle_batches(calib, 3)
    assert [next(batches).shape for _ in range(5)] == [torch.Size([3, 32])] * 5


def test_reconstruction_defaults_follow_the_storage_path():
    auto = LLMPrune("sparsegpt", reconstruct=4)
    memory, stream = auto.resolved(streaming=False), auto.resolved(streaming=True)
    assert (memory.reconstruct_optimizer, memory.reconstruct_lr) == ("adam", DEFAULT_LR["adam"])
    assert (stream.reconstruct_optimizer, stream.reconstruct_lr) == (
        "adafactor", DEFAULT_LR["adafactor"],
    )  # fmt: skip
    chosen = LLMPrune("sparsegpt", reconstruct_optimizer="adafactor", reconstruct_lr=5e-3)
    assert chosen.resolved(streaming=False) == chosen  # what the user set is kept
    width = LLMPrune("width", 0.25)
    assert width.resolved(streaming=False) is width  # no reconstruction knobs there


def test_in_memory_report_shows_what_ran(calib):
    model = tiny_llama(layers=2)
    report = prune_model(model, LLMPrune("wanda", 0.5, reconstruct=1), calib)
    assert report["config"]["reconstruct_optimizer"] == "adam"
    assert report["config"]["reconstruct_lr"] == DEFAULT_LR["adam"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="wanda", nm="2:4", owl=0.1), "owl applies"),
        (dict(method="width", owl=0.1), "owl applies"),
        (dict(method="wanda", sparsity=0.05, owl=0.1), "must leave every block"),
        (dict(method="width", reconstruct=2), "reconstruct applies"),
        (dict(method="wanda", reconstruct=-1), "non-negative"),
        (dict(method="wanda", reconstruct_batch=0), ">= 1"),
        (dict(method="wanda", reconstruct_lr=0.0), "> 0"),
        (dict(method="wanda", reconstruct_optimizer="sgd"), "unknown reconstruct_optimizer"),
        (dict(method="wanda", train_dtype="float16"), "unknown train_dtype"),
        (dict(method="wanda", seed=-1), "seed must be a non-negative int"),
        (dict(method="wanda", seed=1.5), "seed must be a non-negative int"),
        (dict(method="wanda", seed=True), "seed must be a non-negative int"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LLMPrune(**kwargs)


def test_streaming_refuses_recovery_before_any_work(calib, tmp_path):
    dense = tiny_llama(layers=2)
    dense.save_pretrained(tmp_path / "src")
    with pytest.raises(ConfigError, match="run it in memory"):
        prune_streaming(
            tmp_path / "src", tmp_path / "out", LLMPrune("depth", remove=1, recover=2), calib
        )
    assert not (tmp_path / "out").exists()


def test_cli_new_steps(tmp_path, capsys):
    from test_llm import _write_model_dir

    from netslim.cli.main import main

    src = _write_model_dir(tmp_path / "m")
    text = tmp_path / "calib.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 20)
    common = ["--calib", str(text), "--seq-len", "32", "--calib-samples", "4"]
    out = tmp_path / "out"
    args = ["llm", str(src), "--method", "wanda", "--owl", "0.1", "--reconstruct", "2", *common]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads((out / "netslim_llm.json").read_text())["report"]
    assert report["config"]["owl"] == 0.1 and "reconstruct" in report["costs"]
    from pruned import zero_fraction
    from test_llm import _linears

    from netslim.llm import load

    saved = zero_fraction(_linears(load(out)))
    assert saved == pytest.approx(report["config"]["sparsity"], abs=0.02), saved
    rec = tmp_path / "rec"
    assert main(["llm", str(src), "--method", "depth", "--remove", "1", "--recover", "2", *common,
                 "--out", str(rec)]) == 0  # fmt: skip
    report = json.loads((rec / "netslim_llm.json").read_text())["report"]
    assert report["recovery"]["steps"] == 2
    assert len(load(rec).model.layers) == 1  # of 2
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["llm", str(src), "--nm", "2:4", "--owl", "0.1", *common, "--out", str(bad)]) == 2
    assert "owl applies" in capsys.readouterr().err and not bad.exists()
    light = tmp_path / "light"
    args = ["llm", str(src), "--method", "wanda", "--reconstruct", "2", "--stream",
            "--recover", "0", *common, "--out", str(light)]  # fmt: skip
    assert main(args) == 0  # streaming picks the memory-light optimizer and its own lr
    report = json.loads((light / "netslim_llm.json").read_text())["report"]
    assert report["streamed"]
    assert report["config"]["reconstruct_optimizer"] == "adafactor"
    assert report["config"]["reconstruct_lr"] == DEFAULT_LR["adafactor"]
    chosen = tmp_path / "chosen"
    assert main([*args[:-1], str(chosen), "--reconstruct-optimizer", "adam",
                 "--reconstruct-lr", "3e-4"]) == 0  # fmt: skip
    report = json.loads((chosen / "netslim_llm.json").read_text())["report"]
    assert report["config"]["reconstruct_optimizer"] == "adam"
    assert report["config"]["reconstruct_lr"] == 3e-4
    for flag, value in (
        ("--reconstruct-optimizer", "sgd"), ("--reconstruct-lr", "0"), ("--train-dtype", "fp16"),
        ("--seed", "-1"),
    ):  # fmt: skip
        assert main([*args[:-1], str(bad), flag, value]) == 2 and not bad.exists()
    sparse = tmp_path / "sparse"
    args = [
        "llm",
        str(src),
        "--method",
        "sparsegpt",
        "--recover",
        "2",
        *common,
        "--out",
        str(sparse),
    ]
    assert main(args) == 0
    report = json.loads((sparse / "netslim_llm.json").read_text())["report"]
    assert report["recovery"]["steps"] == 2
    assert zero_fraction(_linears(load(sparse))) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("weight_decay", [None, 0.1])
def test_llm_adam_is_fused_on_cpu_and_steps_like_the_loop(weight_decay):
    from netslim.llm.optim import adam

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 7, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(3)]
    runs = []
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = adam(params, 1e-2, weight_decay=weight_decay)
        if not fused:  # the reference: the same optimizer as a per-tensor loop
            kw = {"lr": 1e-2} if weight_decay is None else {"lr": 1e-2, "weight_decay": 0.1}
            opt = type(opt)(params, foreach=False, **kw)
        assert opt.defaults["fused"] is (True if fused else None)
        assert isinstance(opt, torch.optim.Adam if weight_decay is None else torch.optim.AdamW)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
        runs.append(params)
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_disk_adam_steps_like_torch_adam(tmp_path, monkeypatch, dtype):
    """The streaming path's Adam (moments in a file, stepped a slice at a time) is torch's Adam:
    several steps, parameters spanning several slices, the file gone when closed."""
    from netslim.llm import disk_adam

    monkeypatch.setattr(disk_adam, "SLICE", 16)
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 7, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(4)]
    reference = [torch.nn.Parameter(t.clone()) for t in start]
    opt = torch.optim.Adam(reference, lr=1e-2, foreach=False)
    params = [torch.nn.Parameter(t.clone().to(dtype)) for t in start]
    disk = disk_adam.DiskAdam(params, 1e-2, tmp_path)
    for step in grads:
        for p, q, g in zip(reference, params, step, strict=True):
            p.grad, q.grad = g.clone(), g.clone().to(dtype)
            disk.step(q)
        opt.step()
    disk.close()
    tol = {} if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    for p, q, first in zip(reference, params, start, strict=True):
        assert q.dtype == dtype and not torch.allclose(p.detach(), first, atol=1e-3)
        torch.testing.assert_close(q.float(), p.detach(), **tol)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_disk_adam_steps_parameters_on_cuda(tmp_path):
    """Parameters on a GPU: the slices go through host buffers and come back to the device."""
    from netslim.llm.disk_adam import DiskAdam

    start = torch.randn(64, 33, generator=torch.Generator().manual_seed(0))
    reference = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([reference], lr=1e-2, foreach=False)
    param = torch.nn.Parameter(start.clone().cuda())
    disk = DiskAdam([param], 1e-2, tmp_path)
    for i in range(3):
        g = torch.randn(start.shape, generator=torch.Generator().manual_seed(i + 1))
        reference.grad, param.grad = g.clone(), g.cuda()
        disk.step(param)
        opt.step()
    disk.close()
    assert param.device.type == "cuda"
    torch.testing.assert_close(param.detach().cpu(), reference.detach())


def test_streaming_adam_keeps_its_moments_on_disk(calib, tmp_path, monkeypatch):
    """On the streaming path, reconstruction with Adam steps through DiskAdam in the output's
    staging folder; in memory it does not."""
    from netslim.llm import disk_adam

    folders = []
    real = disk_adam.DiskAdam.__init__

    def spy(self, params, lr, scratch, **kw):
        folders.append(Path(scratch))
        real(self, params, lr, scratch, **kw)

    monkeypatch.setattr(disk_adam.DiskAdam, "__init__", spy)
    dense = tiny_llama(layers=2)
    dense.save_pretrained(tmp_path / "src")
    config = LLMPrune("wanda", 0.5, reconstruct=2, reconstruct_optimizer="adam")
    prune_model(copy.deepcopy(dense), config, calib)
    assert folders == []
    prune_streaming(tmp_path / "src", tmp_path / "out", config, calib)
    assert len(folders) == 2 and all(f.name.startswith(".out.staging-") for f in folders)
