"""Importance criteria with hand-checked rankings, slimming, sensitivity, bad inputs."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from pruned import param_count
from torch import nn

import netslim
from netslim.errors import ConfigError, DataError, UnsupportedModelError
from netslim.importance import Calibration
from netslim.regularization import BNScalePenalty, GroupLassoPenalty
from netslim.structural import Channels
from netslim.structural.engine import make_plan
from netslim.structural.importance import lamp_transform
from netslim.unstructured import Unstructured, compute_masks

X = (torch.ones(1, 2),)


def mlp(rows: list[list[float]], w2: float = 0.0) -> nn.Sequential:
    """Linear(2, 3) -> ReLU -> Linear(3, 2): one prunable hidden group of size 3."""
    model = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(rows))
        model[2].weight.fill_(w2)
    return model


def kept(model: nn.Module, criterion: str, ratio: float = 1 / 3, **kwargs) -> list[int]:
    cal = kwargs.pop("calibration", None)
    plan, _ = make_plan(model, X, Channels(ratio=ratio, criterion=criterion, **kwargs), None, cal)
    (keep,) = plan.keep.values()
    return keep


def loader(*batches):
    return list(batches)


# ---- magnitude, FPGM, LAMP ------------------------------------------------------------------


def test_l1_l2_rank_by_row_norm() -> None:
    # |row| sums: 3, 4, 5 (l1) ; norms: sqrt(5)=2.24, sqrt(8)=2.83, 5 (l2) -> drop row 0
    model = mlp([[1.0, 2.0], [2.0, 2.0], [0.0, 5.0]])
    assert kept(model, "l1") == [1, 2]
    assert kept(model, "l2") == [1, 2]
    # l1 and l2 disagree: [3, 0] has l1 3 < 3.5 but l2 3 > 2.47
    model = mlp([[3.0, 0.0], [1.75, 1.75], [9.0, 9.0]])
    assert kept(model, "l1") == [1, 2]
    assert kept(model, "l2") == [0, 2]


def test_fpgm_drops_the_filter_nearest_the_median() -> None:
    # distances: f0 = 1 + 10 = 11, f1 = 1 + 9 = 10, f2 = 10 + 9 = 19 -> f1 is most replaceable
    model = mlp([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    assert kept(model, "fpgm") == [0, 2]
    assert kept(model, "l2") == [1, 2]  # magnitude would drop the zero filter instead


def test_lamp_scores_by_hand() -> None:
    # squares 1, 4, 9: 1/14, 4/13, 9/9
    got = lamp_transform(torch.tensor([1.0, 4.0, 9.0]))
    assert torch.allclose(got, torch.tensor([1 / 14, 4 / 13, 1.0]))
    masks = compute_masks(
        nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),
        Unstructured(ratio=0.9, criterion="lamp", include_classifier=True),
    )
    assert all(m.any() for m in masks.values())  # a global threshold never empties a layer


# ---- BatchNorm scales (network slimming) ------------------------------------------------------


def bn_model() -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)
    )
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 0.1]))
        model[0].weight.copy_(torch.tensor([9.0, 0.1, 5.0]).view(3, 1, 1, 1))
    return model.eval()


def test_bn_scale_ranks_by_abs_gamma() -> None:
    model = bn_model()
    plan, _ = make_plan(model, (torch.ones(1, 1, 2, 2),), Channels(ratio=1 / 3, criterion="bn"))
    assert list(plan.keep.values()) == [[0, 1]]  # |γ| 0.1 goes although its conv row is large


def test_bn_criterion_without_bn_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedModelError, match="no affine BatchNorm"):
        kept(mlp([[1.0, 0.0]] * 3), "bn")


def test_bn_penalty_and_warmup() -> None:
    model = bn_model()
    pen = BNScalePenalty(0.5, warmup=4)
    assert pen(model).item() == 0.0
    pen.step(2)
    assert pen(model).item() == pytest.approx(0.5 * 0.5 * 2.6)
    pen.step(10)
    assert pen(model).item() == pytest.approx(0.5 * 2.6)
    with pytest.raises(UnsupportedModelError, match="GroupLassoPenalty"):
        BNScalePenalty(0.1)(mlp([[1.0, 0.0]] * 3))


def test_group_lasso_by_hand() -> None:
    model = mlp([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]], w2=0.0)
    pen = GroupLassoPenalty(2.0, model, X)
    # channel norms over row + column (column zero): 5, 0, 1
    assert pen(model).item() == pytest.approx(2.0 * 6.0, rel=1e-5)
    pen(model).backward()
    assert model[0].weight.grad[0].tolist() == pytest.approx([2 * 0.6, 2 * 0.8])


# ---- gradient criteria ------------------------------------------------------------------------


def sum_loss(model, batch):
    return model(batch[0]).sum()


def test_taylor_and_fisher_by_hand() -> None:
    model = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 2.0]]))
    batches = loader((torch.tensor([[1.0, 4.0]]), None))
    cfg = dict(ratio=0.5, include_classifier=True, scope="layer")
    # g = x = [1, 4]: taylor |w·g| = [3, 8]; fisher ½ g² w² = [4.5, 32]; magnitude keeps w=3
    for criterion in ("taylor", "fisher"):
        masks = compute_masks(
            model,
            Unstructured(criterion=criterion, **cfg),
            Calibration(batches, loss=sum_loss),
        )
        assert masks["0.weight"].tolist() == [[False, True]], criterion
    assert compute_masks(model, Unstructured(**cfg))["0.weight"].tolist() == [[True, False]]
    assert model[0].weight.grad is None  # gradients left as found


def test_structured_taylor_ranks_by_loss_change() -> None:
    # hidden h = relu(W1 x); loss = sum(W2 h). Row 2 large but its output column is zero.
    model = mlp([[1.0, 0.0], [0.5, 0.0], [9.0, 0.0]])
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
    cal = Calibration(loader((torch.ones(4, 2), None)), loss=sum_loss)
    assert kept(model, "taylor", calibration=cal) == [0, 1]
    assert kept(model, "l2") == [0, 2]


def test_gradient_criteria_read_the_logits_of_a_model_output() -> None:
    """Taylor and Fisher's default loss (cross-entropy on labelled batches) reads the logits of
    an output object as training does (a Hugging Face classifier returns one; before, the loss
    got the object and raised a TypeError)."""

    class Classifier(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=self.inner(x))

    torch.manual_seed(0)
    batches = [(torch.randn(8, 2), torch.randint(0, 2, (8,))) for _ in range(2)]
    rows = [[1.0, 0.5], [0.2, 0.1], [2.0, -1.0]]
    for crit in ("taylor", "fisher"):
        bare, wrapped = mlp(rows, w2=0.5), Classifier(mlp(rows, w2=0.5))
        plan, _ = make_plan(bare, X, Channels(ratio=1 / 3, criterion=crit), None,
                            Calibration(batches))  # fmt: skip
        theirs, _ = make_plan(wrapped, X, Channels(ratio=1 / 3, criterion=crit), None,
                              Calibration(batches))  # fmt: skip
        assert list(theirs.keep.values()) == list(plan.keep.values()), crit


@pytest.mark.noop_ok("a data criterion without data is refused before anything is pruned")
def test_data_criteria_need_data_and_batches() -> None:
    model = mlp([[1.0, 0.0]] * 3)
    for crit in ("taylor", "fisher", "wanda", "apoz", "activation"):
        with pytest.raises(ConfigError, match="train_loader"):
            kept(model, crit)
    with pytest.raises(DataError, match="no batches"):
        kept(model, "wanda", calibration=Calibration([]))
    with pytest.raises(ConfigError, match="needs a loss"):
        kept(model, "taylor", calibration=Calibration([torch.ones(2, 2)]))
    with pytest.raises(ConfigError, match="train_loader"):
        netslim.prune_(
            nn.Sequential(nn.Linear(2, 2)),
            Unstructured(criterion="wanda", include_classifier=True),
        )


# ---- activation criteria and Wanda ------------------------------------------------------------


def test_apoz_and_mean_activation() -> None:
    # inputs x >= 0: row 0 always > 0 (mean 2), row 1 always <= 0, row 2 > 0 on half (mean .5)
    model = mlp([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], w2=1.0)
    x = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    cal = Calibration(loader((x, None)))
    assert kept(model, "apoz", calibration=cal) == [0, 2]
    assert kept(model, "activation", ratio=2 / 3, calibration=cal) == [0]


def test_wanda_unstructured_row_and_nm() -> None:
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 1.0, 1.0, 2.0], [3.0, 1.0, 2.0, 1.0]]))
    model = nn.Sequential(lin)
    x = torch.tensor([[1.0, 10.0, 0.0, 1.0]])  # column norms 1, 10, 0, 1
    cal = Calibration(loader((x, None)))
    cfg = dict(criterion="wanda", include_classifier=True)
    row = compute_masks(model, Unstructured(ratio=0.5, scope="row", **cfg), cal)["0.weight"]
    assert row.tolist() == [[True, True, False, False], [True, True, False, False]]
    nm = compute_masks(model, Unstructured(nm=(2, 4), **cfg), cal)["0.weight"]
    assert nm.sum(1).tolist() == [2, 2] and nm[:, 1].all()  # ‖X‖=10 column survives
    mag = Unstructured(ratio=0.5, scope="layer", include_classifier=True)
    mag = compute_masks(model, mag)["0.weight"]
    assert not mag[0, 1]  # magnitude alone would drop it


def test_wanda_structured_prune_through_api() -> None:
    # rows equal in magnitude; input 1 is ten times larger -> the row reading it is kept
    model = mlp([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]], w2=0.0)
    x = torch.tensor([[1.0, 10.0]])
    report = netslim.prune_(
        model,
        Channels(ratio=2 / 3, criterion="wanda"),
        example_inputs=X,
        train_loader=loader((x, None)),
    )
    assert model[0].weight.tolist() == [[0.0, 1.0]]
    assert report["groups"]["pruned"] == 1


# ---- slimming and sensitivity end to end ------------------------------------------------------


def test_slimming_job_end_to_end(tmp_path, model_file, fast_job) -> None:
    from netslim.jobs.pipeline import run_job

    settings = fast_job.settings(
        f"py:{model_file}:build",
        method="slimming",
        ratio=0.25,
        l1_reg=1e-3,
        l1_warmup=2,
        limit_train=64,
        limit_test=64,
        batch_size=32,
        example_shape=[1, 1, 28, 28],
        out=str(tmp_path / "run"),
    )
    report = run_job(settings)
    assert report["settings"]["method"] == "slimming"
    assert report["params_after"] < report["params_before"]
    model = netslim.load(tmp_path / "run" / "model", trust_code=True)
    assert model[1].num_features < 8  # BN channels were removed


def test_sensitivity_scan_propose_and_per_module(tmp_path, model_file) -> None:
    from netslim.cli.main import main

    out = tmp_path / "sens"
    rc = main(
        [
            "sensitivity", f"py:{model_file}:build", "--data", "synthetic", "--epochs", "0",
            "--ratios", "0.25,0.5,0.75", "--limit-train", "32", "--limit-test", "64",
            "--target-macs", "0.6", "--example-shape", "1,1,28,28", "--out", str(out), "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    scan = json.loads((out / "sensitivity.json").read_text())
    assert len(scan["units"]) == 3 and len(scan["units"][0]["accuracy"]) == 3
    assert scan["proposal"]["macs_fraction"] <= 0.6 and "note" not in scan["proposal"]
    per_module = json.loads((out / "per_module.json").read_text())
    assert (out / "sensitivity.md").exists()
    model = netslim.build_model(f"py:{model_file}:build")
    report = netslim.prune_(
        model, Channels(ratio=0.0, per_module=per_module), example_inputs=torch.randn(1, 1, 28, 28)
    )
    assert report["macs"]["after"] / report["macs"]["before"] == pytest.approx(
        scan["proposal"]["macs_fraction"], rel=1e-6
    )
    # the model itself, counted by torch's flop counter, not the report
    dense = netslim.build_model(f"py:{model_file}:build")
    assert _flops(model) / _flops(dense) == pytest.approx(
        scan["proposal"]["macs_fraction"], rel=1e-6
    )
    assert param_count(model) == report["params"]["after"] < param_count(dense)


def _flops(model: nn.Module) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.randn(1, 1, 28, 28))
    return counter.get_total_flops()


def test_bad_sensitivity_and_per_module_inputs(tmp_path) -> None:
    from netslim.sensitivity import scan_sensitivity
    from netslim.structural.settings import load_per_module

    with pytest.raises(ConfigError, match="ratios"):
        scan_sensitivity(mlp([[1.0, 0.0]] * 3), X, lambda m: 1.0, ratios=[1.5])
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="module name"):
        load_per_module(str(bad))
    with pytest.raises(ConfigError, match="calibration_batches"):
        Channels(calibration_batches=0)


def test_sensitivity_proposal_says_when_the_target_is_out_of_reach() -> None:
    """The scanned ratios bound how deep a proposal goes: asked for more, it keeps what they
    allow and says so (it used to return the shallower proposal silently)."""
    from netslim.sensitivity import propose_ratios, scan_sensitivity

    model = mlp([[1.0, 0.0]] * 3)
    scan = scan_sensitivity(model, X, lambda m: 1.0, ratios=[0.5])
    reachable = propose_ratios(model, X, scan, 0.9)
    assert "note" not in reachable and reachable["macs_fraction"] <= 0.9
    deep = propose_ratios(model, X, scan, 0.01)
    assert set(deep["per_module"].values()) == {0.5}  # every unit at its largest ratio
    assert deep["macs_fraction"] > 0.01
    assert "out of reach" in deep["note"] and f"{deep['macs_fraction']:.3f}" in deep["note"]


def _fake_latency_ms(model: nn.Module, example_inputs, **_) -> SimpleNamespace:
    """A deterministic clock for the search: 1 ms per 10k parameters (what the search needs is a
    cost that falls as channels go; wall-clock time on shared cores is neither)."""
    return SimpleNamespace(median=sum(p.numel() for p in model.parameters()) / 1e4)


def test_latency_target_search(monkeypatch: pytest.MonkeyPatch) -> None:
    import netslim.structural.latency_search as search
    from netslim.sensitivity import prune_to_latency

    monkeypatch.setattr(search, "latency_ms", _fake_latency_ms)
    latency_ms = _fake_latency_ms
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
    model.append(nn.Linear(256, 2))
    x = (torch.randn(64, 64),)
    assert "nothing pruned" in prune_to_latency(model, x, 1e6, repeats=2)["note"]
    with pytest.raises(ConfigError, match="reaches"):
        prune_to_latency(copy.deepcopy(model), x, 1e-9, steps=2, repeats=2)
    dense_ms = latency_ms(model, x, repeats=5).median
    report = prune_to_latency(model, x, dense_ms * 0.7, steps=4, repeats=5)
    assert report["macs"]["after"] < report["macs"]["before"]
    assert model[0].out_features < 256


def test_slimming_without_bn_uses_group_lasso(tmp_path, fast_job) -> None:
    from netslim.jobs.pipeline import _regularizer, run_job

    settings = fast_job.settings(
        "zoo:lenet300",
        method="slimming",
        ratio=0.5,
        l1_reg=1e-4,
        limit_train=64,
        limit_test=64,
        finetune_epochs=0,
        batch_size=32,
        out=str(tmp_path / "run"),
    )
    model = netslim.build_model("zoo:lenet300")
    assert isinstance(
        _regularizer(settings, model, (torch.randn(1, 1, 28, 28),)), GroupLassoPenalty
    )
    report = run_job(settings)
    assert report["params_after"] < report["params_before"]


@pytest.mark.parametrize("shape", [(48, 20), (5, 7), (2, 3, 4, 5), (9,)])
@pytest.mark.parametrize("p", [1, 2])
def test_norm_sums_match_vector_norm_on_every_dim(shape, p, monkeypatch) -> None:
    """The fast per-index sums (chunked when the kept dim is the last) are the exact norms."""
    from netslim.structural import importance

    monkeypatch.setattr(importance, "_CHUNK_ELEMENTS", 64)  # several chunks on these shapes
    t = torch.randn(*shape, dtype=torch.float64)
    for dim in range(t.dim()):
        others = [d for d in range(t.dim()) if d != dim]
        got = importance._power_sums(t, others, p)
        want = torch.linalg.vector_norm(t, p, dim=others) ** p if others else t.abs() ** p
        assert got.shape == (shape[dim],)
        assert torch.allclose(got, want)


def test_each_tensor_slice_is_scored_once_even_when_skipped() -> None:
    """Per-index sums are cached per (tensor, dim), skipped tensors (None) included."""
    from netslim.structural.groups import analyze
    from netslim.structural.importance import L2Norm

    calls: list[tuple[str, int]] = []

    class CountingL2(L2Norm):
        def _per_position(self, name, t, dim):
            calls.append((name, dim))
            return None if name.endswith("bias") else super()._per_position(name, t, dim)

    model = netslim.build_model("zoo:vgg_small").eval()
    analysis = analyze(model, (torch.randn(1, 1, 28, 28),))
    crit, cache = CountingL2(), {}
    crit.fill_cache(analysis.groups, analysis.graph.tensors, cache)
    for g in analysis.groups:
        crit.score(g, analysis.graph.tensors, torch.Generator(), cache)
    assert calls and len(calls) == len(set(calls))
    assert any(name.endswith("bias") for name, _ in calls)
