"""compact_: dead and constant channels removed physically, constants folded where exact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import netslim
from netslim.core.copying import copy_model
from netslim.core.masks import attach_mask
from netslim.errors import PruningError
from netslim.models.spec import build_model
from netslim.structural import constants
from netslim.structural.compact import compact_


def _bn_stats(bn: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so a cut channel carries a non-zero constant."""
    gen = torch.Generator().manual_seed(seed)
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=gen) - 1.0)
        bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        bn.bias.copy_(torch.rand(n, generator=gen))


def _zero_rows(t: torch.Tensor, rows: list[int]) -> None:
    with torch.no_grad():
        t[rows] = 0


def _check_same(original: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        diff = float((original.eval()(x) - model.eval()(x)).abs().max())
    assert diff <= 1e-5
    return diff


def _how(report: dict) -> dict[int, str]:
    return {c["index"]: c["how"] for c in report["removed_channels"]}


def test_constant_folds_through_conv_without_padding():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, bias=False), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
    ).eval()  # fmt: skip
    _bn_stats(model[1])
    _zero_rows(model[0].weight, [1, 5])
    with torch.no_grad():  # the bias keeps channel 5 alive only through BN: constant either way
        model[0].bias[1] = 0.0
    original = copy.deepcopy(model)
    x = torch.randn(2, 3, 10, 10)
    report = compact_(model, (x,))
    assert model[0].out_channels == 6 and model[3].in_channels == 6
    assert model[3].bias is not None and report["biases_created"] == ["3"]
    assert set(_how(report)) == {1, 5}
    assert all(c["constant"] != 0 for c in report["removed_channels"])
    assert "3" in report["folded_into"]
    _check_same(original, model, torch.randn(3, 3, 10, 10))


def test_constant_folds_through_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    _zero_rows(model[0].weight, [0, 3, 7])
    with torch.no_grad():
        model[0].bias[[0, 3, 7]] = torch.tensor([0.5, -0.2, 0.0])
    original = copy.deepcopy(model)
    report = compact_(model, (torch.randn(4, 10),))
    assert model[0].out_features == 13 and model[2].in_features == 13
    how = _how(report)
    assert how[0] == "folded" and how[3] == "dead" and how[7] == "dead"  # relu(-0.2) = 0
    _check_same(original, model, torch.randn(6, 10))


def test_zero_batchnorm_scale_is_a_constant():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4)
    ).eval()  # fmt: skip
    _bn_stats(model[1])
    with torch.no_grad():
        model[1].weight[[2, 9]] = 0.0  # output = relu(beta): a constant whatever the input
    original = copy.deepcopy(model)
    report = compact_(model, (torch.randn(4, 10),))
    assert model[1].num_features == 10 and model[3].in_features == 10
    assert set(_how(report)) == {2, 9}
    _check_same(original, model, torch.randn(5, 10))


def test_padding_keeps_a_nonzero_constant_and_says_why():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).eval()  # fmt: skip
    _bn_stats(model[1])
    with torch.no_grad():
        model[1].bias[6] = -5.0  # channel 6: relu(negative) = 0 -> dead, removable despite padding
    _zero_rows(model[0].weight, [2, 6])
    original = copy.deepcopy(model)
    x = torch.randn(2, 3, 8, 8)
    report = compact_(model, (x,))
    assert _how(report) == {6: "dead"}
    kept = [k for k in report["kept"] if k["index"] == 2]
    assert len(kept) == 1 and "padding" in kept[0]["reason"] and "3" in kept[0]["reason"]
    assert model[0].out_channels == 7
    _check_same(original, model, torch.randn(2, 3, 8, 8))


def test_replicate_padding_sees_the_same_constant():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1, padding_mode="replicate"),
    ).eval()  # fmt: skip
    _bn_stats(model[1])
    _zero_rows(model[0].weight, [4])
    original = copy.deepcopy(model)
    report = compact_(model, (torch.randn(2, 3, 9, 9),))
    assert _how(report) == {4: "folded"}
    _check_same(original, model, torch.randn(2, 3, 9, 9))


def test_no_dead_channels_leaves_the_model_bit_identical():
    torch.manual_seed(0)
    model = build_model("zoo:vgg_small").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    report = compact_(model, (torch.randn(1, 1, 28, 28),))
    assert report["removed_channels"] == [] and "unchanged" in report["note"]
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert netslim.core.history.get_history(model) == []


def test_coupled_group_is_removed_only_where_every_member_agrees():
    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 6, 1)
            self.b = nn.Conv2d(3, 6, 1)
            self.head = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.head(self.a(x) + self.b(x))

    torch.manual_seed(0)
    model = Res().eval()
    _zero_rows(model.a.weight, [0, 1])
    _zero_rows(model.b.weight, [1])  # index 0: b still computes it
    original = copy.deepcopy(model)
    report = compact_(model, (torch.randn(2, 3, 5, 5),))
    assert set(_how(report)) == {1}
    assert any(k["index"] == 0 and k["kind"] == "coupled" for k in report["kept"])
    assert model.a.out_channels == 5
    _check_same(original, model, torch.randn(2, 3, 5, 5))


def test_torch_prune_masks_still_attached_structured_and_unstructured():
    torch.manual_seed(0)
    model = build_model("zoo:vgg_small").eval()
    prune.ln_structured(model.features[0], "weight", amount=0.5, n=1, dim=0)
    prune.l1_unstructured(model.features[3], "weight", amount=0.3)
    original = copy_model(model)
    x = torch.randn(1, 1, 28, 28)
    report = compact_(model, (x,))
    assert set(report["adopted_masks"]) == {"features.0.weight", "features.3.weight"}
    assert model.features[0].out_channels == 8 and not hasattr(model.features[0], "weight_orig")
    assert report["params"]["after"] < report["params"]["before"]
    _check_same(original, model, torch.randn(2, 1, 28, 28))


def test_netslim_structured_mask_is_adopted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].bias.zero_()
    mask = torch.ones(8, 6, dtype=torch.bool)
    mask[[1, 2]] = False
    attach_mask(model[0], "weight", mask)
    original = copy.deepcopy(model)
    report = compact_(model, (torch.randn(2, 6),))
    assert report["adopted_masks"] == ["0.weight"]
    assert model[0].out_features == 6 and model[2].in_features == 6
    _check_same(original, model, torch.randn(4, 6))


def test_an_inexact_fold_is_refused_and_the_model_is_unchanged(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
    ).eval()  # fmt: skip
    _bn_stats(model[1])
    _zero_rows(model[0].weight, [2])
    monkeypatch.setattr(constants, "UNIFORM_RTOL", 10.0)  # pretend padding does not matter
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruningError, match="differs from the original"):
        compact_(model, (torch.randn(2, 3, 8, 8),))
    assert model[0].out_channels == 8 and model[3].bias is not None
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_save_load_replays_compaction(tmp_path):
    torch.manual_seed(0)
    model = build_model("zoo:resnet20").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _bn_stats(m, seed=m.num_features)
        if isinstance(m, nn.Conv2d):
            prune.ln_structured(m, "weight", amount=0.5, n=1, dim=0)
            prune.remove(m, "weight")
    original = copy.deepcopy(model)
    x = torch.randn(1, 1, 28, 28)
    report = compact_(model, (x,))
    assert report["params"]["after"] < report["params"]["before"]
    netslim.save(model, tmp_path / "out")
    loaded = netslim.load(tmp_path / "out")
    assert sum(p.numel() for p in loaded.parameters()) == report["params"]["after"]
    y = torch.randn(2, 1, 28, 28)
    _check_same(original, loaded, y)
    with torch.no_grad():
        assert torch.equal(loaded(y), model.eval()(y))


def test_cli_compacts_a_saved_model(tmp_path, capsys):
    from netslim.cli.main import main

    model = build_model("zoo:vgg_small").eval()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            prune.ln_structured(m, "weight", amount=0.5, n=1, dim=0)
            prune.remove(m, "weight")
    netslim.save(model, tmp_path / "in")
    out = tmp_path / "small"
    assert main(["compact", str(tmp_path / "in"), "--no-latency", "--out", str(out)]) == 0
    report = __import__("json").loads((out / "compact.json").read_text())
    assert report["params"]["after"] < report["params"]["before"]
    loaded = netslim.load(out / "model")
    assert sum(p.numel() for p in loaded.parameters()) == report["params"]["after"]
    assert "removed 112 dead" in capsys.readouterr().out


def test_cli_compacts_a_torch_prune_state_dict(tmp_path, capsys):
    """A state dict saved with torch.nn.utils.prune's masks still attached (weight_orig and
    weight_mask) is given to a spec with --weights: it loads as orig x mask, and compact
    removes the masked filters. --weights beside a saved model is refused."""
    from netslim.cli.main import main

    torch.manual_seed(0)
    model = build_model("zoo:vgg_small").eval()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            prune.ln_structured(m, "weight", amount=0.5, n=1, dim=0)
    torch.save(model.state_dict(), tmp_path / "torch_prune.pt")
    out = tmp_path / "small"
    weights = ["--weights", str(tmp_path / "torch_prune.pt")]
    assert main(["compact", "zoo:vgg_small", *weights, "--no-latency", "--out", str(out)]) == 0
    assert "removed 112 dead" in capsys.readouterr().out
    loaded = netslim.load(out / "model")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)
    assert main(["compact", str(out), *weights, "--out", str(tmp_path / "again")]) == 2
    assert "--weights goes with a model spec" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    from netslim.cli.main import main

    out = tmp_path / "o"
    assert main(["compact", "not-a-spec", "--out", str(out)]) == 2
    assert main(["compact", str(tmp_path), "--out", str(out)]) == 2  # no saved model there
    assert main(["compact", "zoo:vgg_small", "--probes", "-1", "--out", str(out)]) == 2
    shape = ["--example-shape", "1,3,32,32"]  # lenet300 reads 1x28x28 (it was a traceback)
    assert main(["compact", "zoo:lenet300", *shape, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("netslim: error:") for line in err)
    assert "give --example-shape matching" in err[-1]
    assert not out.exists()


def test_zero_tol_snaps_channels_a_penalty_shrank():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():  # channel 4's whole unit (row, bias, consumer column) is tiny
        model[0].weight[4] *= 1e-8
        model[0].bias[4] = 1e-9
        model[2].weight[:, 4] *= 1e-8
    x = (torch.randn(2, 6),)
    exact = compact_(copy.deepcopy(model), x)
    assert exact["removed_channels"] == []
    original = copy.deepcopy(model)
    report = compact_(model, x, zero_tol=1e-6)
    assert report["snapped"]["channels"] == 1 and report["snapped"]["max_abs_diff"] < 1e-6
    assert model[0].out_features == 7
    _check_same(original, model, torch.randn(4, 6))
    with pytest.raises(netslim.errors.ConfigError, match="zero_tol"):
        compact_(model, x, zero_tol=-1.0)


def test_group_lasso_prox_zeroes_whole_units_and_compact_removes_them():
    from netslim.regularization import GroupLassoPenalty

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = (torch.randn(2, 6),)
    with torch.no_grad():  # channel 2's unit (row, bias, consumer column) is small
        model[0].weight[2] *= 0.01
        model[0].bias[2] *= 0.01
        model[2].weight[:, 2] *= 0.01
    penalty = GroupLassoPenalty(0.1, model, x)
    before = penalty._unit_norms(dict(model.named_parameters()))[0].detach()
    tau = float(before[2]) + 1e-3
    assert penalty.prox_(model, tau) == 1
    after = penalty._unit_norms(dict(model.named_parameters()))[0]
    assert after[2] == 0 and model[2].weight[:, 2].abs().sum() == 0
    keep = torch.arange(8) != 2
    assert torch.allclose(after[keep], before[keep] - tau, atol=1e-5)
    original = copy.deepcopy(model)
    report = compact_(model, x)
    assert model[0].out_features == 7 and len(report["removed_channels"]) == 1
    _check_same(original, model, torch.randn(4, 6))


def test_training_with_group_lasso_zeroes_units_that_compact_removes():
    """The trainer applies a proximal penalty after each step (not through the loss), so the
    channels group lasso drives down reach exactly zero and compact_ removes exactly those."""
    from netslim.regularization import GroupLassoPenalty
    from netslim.training.trainer import train

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x = (torch.randn(2, 6),)
    data = [(torch.randn(32, 6), torch.randint(0, 3, (32,))) for _ in range(20)]
    penalty = GroupLassoPenalty(0.5, model, x)
    train(model, data, epochs=2, lr=0.05, optimizer="sgd", regularizer=penalty, progress=False)
    norms = penalty._unit_norms(dict(model.named_parameters()))[0]
    zeroed = int((norms == 0).sum())
    assert 0 < zeroed < 16  # some whole units exactly zero, not all
    model.eval()
    original = copy.deepcopy(model)
    compact_(model, x)
    assert model[0].out_features == 16 - zeroed
    _check_same(original, model, torch.randn(4, 6))
