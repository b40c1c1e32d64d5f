"""Depth pruning and gates (netslim.layers): finding blocks, removal, criteria, gates, baking,
history replay, Hugging Face round trips and bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import netslim
from netslim.errors import ConfigError, UnsupportedModelError
from netslim.layers import (
    GatePenalty,
    Gates,
    Layers,
    attach_gates,
    bake_gates,
    executed_blocks,
    find_blocks,
    gate_states,
    remove_blocks,
    score_blocks,
)
from netslim.layers.gates import gate_modules
from netslim.models.spec import build_model

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model("zoo:resnet20").eval()


def test_find_blocks_resnet20() -> None:
    names = [b.name for b in find_blocks(_resnet20(), X)]
    # the first block of stages 2 and 3 downsamples: not removable
    assert names == [
        "layer1.0",
        "layer1.1",
        "layer1.2",
        "layer2.1",
        "layer2.2",
        "layer3.1",
        "layer3.2",
    ]


def test_find_blocks_mobilenet_v2() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    names = [b.name for b in find_blocks(model, torch.randn(1, 3, 32, 32))]
    skip = [
        f"features.{i}"
        for i, m in enumerate(model.features)
        if getattr(m, "use_res_connect", False)
    ]
    assert names == skip and len(names) == 10


def _tiny_bert():
    from tiny_hf import tiny_bert

    return tiny_bert(num_hidden_layers=4, num_attention_heads=2)


def _tiny_llama():
    from tiny_hf import tiny_llama

    return tiny_llama(num_hidden_layers=4, num_attention_heads=2)


def test_find_blocks_tiny_bert() -> None:
    model = _tiny_bert()
    ids = torch.randint(0, 100, (2, 8))
    assert [b.name for b in find_blocks(model, {"input_ids": ids})] == [
        f"encoder.layer.{i}" for i in range(4)
    ]


def test_zero_branch_block_removed_output_unchanged() -> None:
    model = _resnet20()
    block = model.layer2[1]
    nn.init.zeros_(block.bn2.weight)  # residual branch outputs exactly zero
    nn.init.zeros_(block.bn2.bias)
    with torch.no_grad():
        before = model(X)
    removed = remove_blocks(model, ["layer2.1"])
    assert removed == ["layer2.1"] and len(model.layer2) == 2
    with torch.no_grad():
        # relu(relu(x) + 0) == the input, which is itself post-ReLU
        assert torch.allclose(model(X), before, atol=1e-6)
    # the zero-branch block scores lowest on every criterion
    scores = score_blocks(
        _zeroed(),
        find_blocks(_zeroed(), X),
        [(X, torch.zeros(4, dtype=torch.long))],
        "block-influence",
    )
    assert min(scores) == pytest.approx(0.0, abs=1e-6)


def _zeroed() -> nn.Module:
    model = _resnet20()
    nn.init.zeros_(model.layer2[1].bn2.weight)
    nn.init.zeros_(model.layer2[1].bn2.bias)
    return model


@pytest.mark.parametrize("criterion", ["block-influence", "branch-norm", "ablation"])
def test_prune_removes_zero_branch_first_and_replays(criterion: str, tmp_path) -> None:
    model = _zeroed()
    summary = netslim.prune_(
        model,
        Layers(remove=1, criterion=criterion),
        example_inputs=X,
        calibration=[X],  # no labels: ablation compares to the dense output
    )
    assert summary["removed"] == ["layer2.1"]
    with torch.no_grad():
        expected = model(X)
    netslim.save(model, tmp_path / "m")
    loaded = netslim.load(tmp_path / "m")
    assert len(loaded.layer2) == 2
    with torch.no_grad():
        assert torch.allclose(loaded(X), expected, atol=1e-6)


def test_blocks_scored_without_data_say_so() -> None:
    """Without calibration data the blocks are scored on the example input alone: the same
    choice, and a NetslimWarning naming the blocks it removed (with data, none)."""
    from netslim.errors import NetslimWarning

    with pytest.warns(NetslimWarning, match=r"example input alone \(no data\): layer2\.1 were"):
        summary = netslim.prune_(_zeroed(), Layers(remove=1), example_inputs=X)
    assert summary["removed"] == ["layer2.1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", NetslimWarning)
        netslim.prune_(_zeroed(), Layers(remove=1), example_inputs=X, calibration=[X])


def _logit_energy(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """A user's loss that is none of the defaults: the mean squared logit."""
    return model(batch).pow(2).mean()


def test_ablation_measures_the_users_loss() -> None:
    """With ``loss=``, each block's ablation score is that loss's increase with the block
    replaced by the identity (checked against removing each block from a copy)."""
    model = _resnet20()
    blocks = find_blocks(model, X)
    scores = score_blocks(model, blocks, [X], "ablation", loss=_logit_energy)
    with torch.no_grad():
        base = float(_logit_energy(model, X))
        expected = []
        for block in blocks:
            copy = _resnet20()
            remove_blocks(copy, [block.name])
            expected.append(float(_logit_energy(copy, X)) - base)
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-6)
    default = score_blocks(model, blocks, [X], "ablation")
    assert default != pytest.approx(scores, rel=1e-3)  # the default loss would measure otherwise


def test_layers_reads_a_calibration_object_and_its_loss() -> None:
    """``calibration=Calibration(loader, loss=fn)`` works for depth pruning as it does for
    channels, and its loss ranks the blocks: the squared distance to the dense logits, which
    only bypassing a live block raises."""
    from netslim.importance import Calibration

    model = _zeroed()
    with torch.no_grad():
        dense = model(X)
    calls = []

    def loss(m: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return (m(batch) - dense).pow(2).mean()

    summary = netslim.prune_(
        model,
        Layers(remove=1, criterion="ablation"),
        example_inputs=X,
        calibration=Calibration([X], loss=loss),
    )
    assert calls and summary["removed"] == ["layer2.1"]


def test_gates_train_with_the_users_loss() -> None:
    """``prune_(..., Gates(...), loss=fn)``: gates and weights are trained on the user's loss
    (here: stay close to the dense logits, on unlabelled dict batches cross-entropy could not
    read) plus the gate penalty, and the closed blocks are removed."""
    model = _resnet20()
    with torch.no_grad():
        dense = model(X)
    steps = []

    def loss(m: nn.Module, batch: dict) -> torch.Tensor:
        steps.append(batch["image"].shape[0])
        return (m(batch["image"]) - dense).pow(2).mean()

    summary = netslim.prune_(
        model,
        Gates(epochs=4, target_open=3, penalty=5.0, lr=0.05),
        example_inputs=X,
        train_loader=[{"image": X}] * 10,
        loss=loss,
    )
    assert steps == [4] * 40
    assert summary["final_loss"] is not None and math.isfinite(summary["final_loss"])
    assert len(summary["removed"]) >= 1 and not gate_modules(model)
    assert model(X).shape == dense.shape


@pytest.mark.noop_ok("bad configs are refused: the model must stay unchanged either way")
def test_bad_input_leaves_model_unchanged() -> None:
    model = _resnet20()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="at least one must remain"):
        netslim.prune_(model, Layers(remove=7), example_inputs=X)
    with pytest.raises(ConfigError, match="changes the shape"):
        netslim.prune_(model, Layers(remove=1, blocks=("layer2.0",)), example_inputs=X)
    with pytest.raises(ConfigError, match="not a child"):
        netslim.prune_(model, Layers(remove=1, blocks=("fc",)), example_inputs=X)
    with pytest.raises(ConfigError):
        Layers(remove=1, ratio=0.5)
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert len(model.layer2) == 3
    with pytest.raises(ConfigError, match="must return a scalar tensor"):  # the user's loss
        netslim.prune_(
            model,
            Gates(epochs=1),
            example_inputs=X,
            train_loader=[(X, torch.zeros(4, dtype=torch.long))],
            loss=lambda m, b: m(b[0]),
        )
    assert not gate_modules(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    lenet = build_model("zoo:lenet300")
    with pytest.raises(UnsupportedModelError, match="no removable block"):
        netslim.prune_(lenet, Gates(epochs=0), example_inputs=X)
    assert not any("gate" in type(m).__name__.lower() for _, m in lenet.named_modules())
    assert not gate_modules(lenet)


def _synthetic(n: int = 64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["ste", "hard-concrete"])
def test_gate_training_moves_gates_and_bakes(estimator: str, tmp_path) -> None:
    model = _resnet20()
    data = _synthetic()
    summary = netslim.prune_(
        model,
        Gates(target_open=3, epochs=8, estimator=estimator, penalty=5.0, bake=False),
        example_inputs=X,
        train_loader=data,
    )
    logits = [g["logit"] for g in summary["gates"].values()]
    assert all(abs(v - 2.0) > 1e-3 for v in logits)  # every gate learned something
    assert sum(v for v in logits) < 2.0 * len(logits)  # the penalty pushed them down
    removed = bake_gates(model, target_open=3)
    assert len(removed) == 4 and not gate_states(model)
    assert sum(len(s) for s in (model.layer1, model.layer2, model.layer3)) == 5
    with torch.no_grad():
        expected = model(X)
    netslim.save(model, tmp_path / "baked")
    loaded = netslim.load(tmp_path / "baked")
    with torch.no_grad():
        assert torch.allclose(loaded(X), expected, atol=1e-6)


def test_baked_model_is_the_static_removal_of_the_same_blocks() -> None:
    """Baking leaves nothing of the gates behind: same modules, tensors, hooks and outputs as
    removing the same blocks directly (a baked model must run as fast as a statically pruned
    one of the same depth)."""
    model = _resnet20()
    reference = _resnet20()
    attach_gates(model, find_blocks(model, X))
    with torch.no_grad():
        for i, gate in enumerate(gate_modules(model).values()):
            gate.gate.fill_(1.0 if i % 2 else -1.0)
    removed = bake_gates(model)
    assert removed
    remove_blocks(reference, removed)
    assert [(n, type(m)) for n, m in model.named_modules()] == [
        (n, type(m)) for n, m in reference.named_modules()
    ]
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks), type(m).__name__
    with torch.no_grad():
        assert torch.equal(model.eval()(X), reference.eval()(X))


def test_closed_static_gate_skips_compute() -> None:
    model = _resnet20()
    blocks = find_blocks(model, X)
    attach_gates(model, blocks)
    gate = model.layer1[0]
    with torch.no_grad():
        gate.gate.fill_(-1.0)
    calls = []
    gate.block.register_forward_hook(lambda *a: calls.append(1))
    model.eval()
    with torch.no_grad():
        model(X[:1])
    assert calls == []


def test_per_input_gates_skip_and_save(tmp_path) -> None:
    model = _resnet20()
    data = _synthetic()
    netslim.prune_(
        model, Gates(target_open=3, epochs=2, per_input=True), example_inputs=X, train_loader=data
    )
    routed = model.layer1[0]
    with torch.no_grad():
        routed.head.bias.fill_(-1.0)
        routed.head.weight.zero_()
    calls = []
    routed.block.register_forward_hook(lambda *a: calls.append(1))
    model.eval()
    executed_blocks(model, reset=True)
    with torch.no_grad():
        out = model(X[:1])
    assert calls == [] and executed_blocks(model) <= 6
    netslim.save(model, tmp_path / "routed")
    loaded = netslim.load(tmp_path / "routed")
    with torch.no_grad():
        assert torch.allclose(loaded(X[:1]), out, atol=1e-6)
    with pytest.raises(ConfigError, match="cannot be baked"):
        bake_gates(model)


def test_per_input_gates_export_to_what_eager_computes(tmp_path) -> None:
    """An exported graph cannot pick a batch subset: it runs a routed block for every sample
    and keeps each sample's output by its gate. Before, both exports failed on the gate's
    data-dependent branch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from netslim.export import export_onnx, export_program

    model = _resnet20()
    netslim.prune_(
        model, Gates(target_open=3, epochs=1, per_input=True), example_inputs=X,
        train_loader=_synthetic(),
    )  # fmt: skip
    routed = list(gate_modules(model).values())[-1]
    seen = []
    routed.register_forward_pre_hook(lambda m, args: seen.append(m.logits(args[0])))
    model.eval()
    with torch.no_grad():  # a gate that opens for half of X's samples
        routed.head.weight.normal_(generator=torch.Generator().manual_seed(0))
        model(X)
        routed.head.bias -= seen.pop().median() / routed.gate_scale + 1e-3
        want = model(X)
    assert 0 < int((seen[0] > 0).sum()) < len(X), seen
    assert export_onnx(model, X[:1], tmp_path / "m.onnx", check_inputs=X).max_abs_diff < 1e-5
    assert export_program(model, X[:1], tmp_path / "m.pt2") < 1e-5
    with torch.no_grad():
        got = torch.export.load(str(tmp_path / "m.pt2")).module()(X)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_penalty_needs_gates() -> None:
    with pytest.raises(UnsupportedModelError):
        GatePenalty()(_resnet20())


def test_hf_bert_round_trip(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    model = _tiny_bert()
    ids = {"input_ids": torch.randint(0, 100, (2, 8))}
    summary = netslim.prune_(model, Layers(remove=2, criterion="ablation"), example_inputs=(ids,))
    assert len(model.encoder.layer) == 2 and model.config.num_hidden_layers == 2
    assert len(summary["removed"]) == 2
    with torch.no_grad():
        expected = model(**ids).last_hidden_state
    model.save_pretrained(tmp_path / "bert")
    loaded = transformers.BertModel.from_pretrained(tmp_path / "bert").eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**ids).last_hidden_state, expected, atol=1e-5)


def test_hf_llama_generate_after_removal(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    model = _tiny_llama()
    ids = torch.randint(0, 100, (1, 6))
    netslim.prune_(model, Layers(remove=2, criterion="block-influence"), example_inputs=(ids,))
    assert model.config.num_hidden_layers == 2
    idx = [layer.self_attn.layer_idx for layer in model.model.layers]
    assert idx == [0, 1]
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    model.save_pretrained(tmp_path / "llama")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "llama").eval()
    assert torch.equal(loaded.generate(ids, max_new_tokens=4, do_sample=False), out)


@pytest.mark.slow
def test_cli_layer_and_gate(tmp_path, capsys) -> None:
    from netslim.cli.main import main

    common = [
        "--data",
        "synthetic",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--batch-size",
        "32",
        "--finetune-epochs",
        "0",
        "--no-latency",
        "--no-progress",
    ]
    out = tmp_path / "layer"
    assert (
        main(
            [
                "prune",
                "zoo:resnet20",
                "--method",
                "layer",
                "--remove",
                "2",
                "--criterion",
                "branch-norm",
                "--epochs",
                "0",
                "--out",
                str(out),
                *common,
            ]
        )
        == 0
    )
    loaded = netslim.load(out / "model")
    assert sum(len(s) for s in (loaded.layer1, loaded.layer2, loaded.layer3)) == 7
    out = tmp_path / "gate"
    assert (
        main(
            [
                "prune",
                "zoo:resnet20",
                "--method",
                "gate",
                "--target-open",
                "5",
                "--epochs",
                "1",
                "--out",
                str(out),
                *common,
            ]
        )
        == 0
    )
    loaded = netslim.load(out / "model")
    assert sum(len(s) for s in (loaded.layer1, loaded.layer2, loaded.layer3)) == 7
    out = tmp_path / "routed"
    args = ["prune", "zoo:resnet20", "--method", "gate", "--per-input", "--target-open", "5"]
    assert main([*args, "--epochs", "1", "--out", str(out), *common]) == 0
    routed = netslim.load(out / "model").eval()
    # per-sample routing survived save and load: the 7 skippable blocks (9 less the two that
    # change shape) are still routed, each sees the sample, and closing a router skips its block
    gates = gate_modules(routed)
    assert len(gates) == 7 and all(hasattr(g, "head") for g in gates.values())
    executed_blocks(routed, reset=True)
    with torch.no_grad():
        routed(torch.randn(1, 1, 28, 28))
    assert all(g.seen == 1 for g in gates.values())
    executed_blocks(routed, reset=True)
    saved = {n: (g.head.weight.clone(), g.head.bias.clone()) for n, g in gates.items()}
    for bias, executed in ((1.0, 7), (-1.0, 0)):  # every router open, then every one closed
        with torch.no_grad():
            for g in gates.values():
                g.head.weight.zero_()
                g.head.bias.fill_(bias)
            routed(torch.randn(2, 1, 28, 28))
        assert executed_blocks(routed, reset=True) == executed
    with torch.no_grad():
        for n, g in gates.items():
            g.head.weight.copy_(saved[n][0])
            g.head.bias.copy_(saved[n][1])
    first = next(iter(gates.values()))
    with torch.no_grad():
        first.head.bias.fill_(-1.0)
        first.head.weight.zero_()
        routed(torch.randn(1, 1, 28, 28))
    assert first.seen == 1 and first.executed == 0
    assert (
        main(
            [
                "prune",
                "zoo:resnet20",
                "--method",
                "layer",
                "--remove",
                "8",
                "--epochs",
                "0",
                "--out",
                str(tmp_path / "bad"),
                *common,
            ]
        )
        == 2
    )
    assert "at least one must remain" in capsys.readouterr().err


def test_hf_dict_example_inputs() -> None:
    model = _tiny_bert()
    ids = {"input_ids": torch.randint(0, 100, (2, 8))}
    summary = netslim.prune_(model, Layers(remove=1), example_inputs=ids)
    assert len(summary["removed"]) == 1 and model.config.num_hidden_layers == 3
