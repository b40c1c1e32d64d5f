"""Layer-wise reconstruction: it lowers each refitted layer's output error against the dense
model on the calibration data, never changes shapes or masks, and solves a linear toy exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import netslim
from netslim.core.masks import iter_masks
from netslim.errors import ConfigError
from netslim.reconstruct import masked_solve, refit_layer, ridge_solve
from netslim.structural import Channels
from netslim.unstructured import Unstructured


def _batches(n: int = 4, shape=(16, 12), seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(*shape, generator=gen), torch.zeros(shape[0], dtype=torch.long))
        for _ in range(n)
    ]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 5)
    )


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _outputs(model: nn.Module, name: str, batches) -> torch.Tensor:
    got: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, a, o: got.append(o))
    with torch.no_grad():
        model.eval()
        for x, _ in batches:
            model(x)
    handle.remove()
    return torch.cat(got)


def _error(model: nn.Module, dense: nn.Module, name: str, batches, out_index=None) -> float:
    ours, ref = _outputs(model, name, batches), _outputs(dense, name, batches)
    if out_index is not None:
        ref = ref.index_select(1, out_index)
    return float((ours - ref).pow(2).sum() / ref.pow(2).sum())


# ---- the linear algebra --------------------------------------------------------------------


def test_ridge_and_masked_solve_match_lstsq():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=gen, dtype=torch.float64)
    y = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    w = ridge_solve(x.t() @ x, x.t() @ y, damp=0.0)
    assert torch.allclose(w, torch.linalg.lstsq(x, y).solution.t(), atol=1e-10)
    keep = torch.rand(3, 10, generator=gen) < 0.5
    w = masked_solve(x.t() @ x, x.t() @ y, keep, damp=0.0)
    assert torch.all(w[~keep] == 0)
    for r in range(3):
        cols = keep[r].nonzero().squeeze(1)
        expected = torch.linalg.lstsq(x[:, cols], y[:, r : r + 1]).solution.squeeze(1)
        assert torch.allclose(w[r, cols], expected, atol=1e-10)


# ---- exact on a linear toy -------------------------------------------------------------------


def test_unstructured_reconstruction_is_exact_when_a_sparse_solution_exists():
    """The dense layer is W = S + E where S is supported on the mask and E only feeds inputs
    that are always zero: the masked least-squares solution is S exactly (plus the bias)."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(8, 4))
    mask = torch.rand(4, 8) < 0.5
    mask[:, :2] = True
    batches = [(torch.randn(64, 8), torch.zeros(64, dtype=torch.long)) for _ in range(3)]
    for x, _ in batches:
        x[:, 6:] = 0.0  # inputs 6, 7 never fire
    mask[:, 6:] = False
    with torch.no_grad():
        sparse = dense[0].weight * mask
        dense[0].weight[:, 6:] = 5.0  # weight that does nothing on this data
        dense[0].weight.copy_(torch.where(mask, sparse, dense[0].weight))
        dense[0].weight[:, :6] = torch.where(mask[:, :6], sparse[:, :6], torch.zeros(()))
    expected = dense[0].weight.detach() * mask
    model = copy.deepcopy(dense)
    with torch.no_grad():  # start far from the answer
        model[0].weight.mul_(0.3)
        model[0].bias.add_(1.0)
    netslim.unstructured.method.apply_masks(model, {"0.weight": mask})
    fit = refit_layer(model, dense, "0", batches, keep=mask, damp=0.0)
    assert fit.after < 1e-12 < fit.before
    assert torch.allclose(model[0].weight, expected, atol=1e-5)
    assert torch.allclose(model[0].bias, dense[0].bias, atol=1e-5)


def test_structural_refit_is_exact_on_a_linear_toy():
    """Two linears, no nonlinearity, 6 inputs and 6 surviving hidden units: the dense output is
    an exact affine function of the surviving units, so the refit consumer reproduces the dense
    model (the weights are the closed-form solution, up to the small ridge)."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(6, 10), nn.Linear(10, 3))
    batches = _batches(4, (32, 6))
    model, plain = copy.deepcopy(dense), copy.deepcopy(dense)
    example = torch.randn(1, 6)
    netslim.prune_(plain, Channels(ratio=0.4), example_inputs=example)
    netslim.prune_(
        model,
        Channels(ratio=0.4, reconstruct=True, calibration_batches=4),
        example_inputs=example,
        train_loader=batches,
    )
    assert model[1].in_features == 6
    x = torch.randn(100, 6)
    with torch.no_grad():  # through the API, with the default ridge: near the dense output
        assert (model(x) - dense(x)).norm() < 0.1 * (plain(x) - dense(x)).norm()
    # without the ridge: the closed-form solution
    fit = refit_layer(plain, dense, "1", batches, damp=0.0)
    assert fit.after < 1e-10 < fit.before
    a, b = plain[0].weight.detach().double(), plain[0].bias.detach().double()
    w2, b2 = dense[1].weight.detach().double(), dense[1].bias.detach().double()
    a_all, b_all = dense[0].weight.detach().double(), dense[0].bias.detach().double()
    w_exact = w2 @ a_all @ torch.linalg.inv(a)  # y = W2 (A_all x + b_all) + b2, x = A⁻¹(h - b)
    b_exact = w2 @ b_all + b2 - w_exact @ b
    assert torch.allclose(plain[1].weight.double(), w_exact, atol=1e-4)
    assert torch.allclose(plain[1].bias.double(), b_exact, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(plain(x), dense(x), atol=1e-4)


# ---- lowers the error, keeps shapes and masks ------------------------------------------------


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_unstructured_reconstruction_lowers_error_keeps_masks(nm):
    dense = _mlp()
    batches = _batches()
    plain, rec = copy.deepcopy(dense), copy.deepcopy(dense)
    cfg = dict(ratio=0.8, scope="layer", include_classifier=True, nm=nm)
    netslim.prune_(plain, Unstructured(**cfg, reconstruct=False), train_loader=batches)
    report = netslim.prune_(rec, Unstructured(**cfg, reconstruct=True), train_loader=batches)
    masks_plain, masks_rec = iter_masks(plain), iter_masks(rec)
    assert masks_plain.keys() == masks_rec.keys() == {"0.weight", "2.weight", "4.weight"}
    for key in masks_plain:
        assert torch.equal(masks_plain[key], masks_rec[key])
    for (n1, p1), (n2, p2) in zip(
        plain.state_dict().items(), rec.state_dict().items(), strict=True
    ):
        assert n1 == n2 and p1.shape == p2.shape
    for name in ("0", "2", "4"):
        layer = report["reconstruction"]["layers"][name]
        assert layer["error_after"] < layer["error_before"]
        # measured independently, through the whole (pruned) model up to this layer
        assert _error(rec, dense, name, batches) < _error(plain, dense, name, batches)
        w = rec.get_submodule(name).weight
        assert torch.all(w[~masks_rec[f"{name}.weight"].bool()] == 0)


def test_channel_reconstruction_lowers_error_keeps_shapes_and_reestimates_bn():
    dense = _cnn()
    batches = _batches(3, (8, 3, 12, 12))
    example = torch.randn(1, 3, 12, 12)
    plain, rec = copy.deepcopy(dense), copy.deepcopy(dense)
    with torch.no_grad():  # BN statistics that do not match the data: re-estimation fixes them
        dense[1].running_mean.fill_(0.3)
    plain, rec = copy.deepcopy(dense), copy.deepcopy(dense)
    netslim.prune_(
        plain, Channels(ratio=0.5, reconstruct=False), example_inputs=example, train_loader=batches
    )
    report = netslim.prune_(
        rec, Channels(ratio=0.5, reconstruct=True), example_inputs=example, train_loader=batches
    )
    assert [p.shape for p in plain.state_dict().values()] == [
        p.shape for p in rec.state_dict().values()
    ]
    layers = report["reconstruction"]["layers"]
    assert set(layers) == {"3", "5", "9"}  # every consumer of a pruned channel group
    for layer in layers.values():
        assert layer["error_after"] < layer["error_before"]
    assert report["reconstruction"]["batchnorm"] == 1
    assert not torch.allclose(rec[1].running_mean, plain[1].running_mean)
    # the network's output moves towards the dense one
    x = torch.cat([b for b, _ in batches])
    with torch.no_grad():
        dense.eval(), plain.eval(), rec.eval()
        assert (rec(x) - dense(x)).norm() < (plain(x) - dense(x)).norm()


@pytest.mark.noop_ok("refused before any work: the model must stay unchanged either way")
def test_reconstruct_without_data_fails_before_touching_the_model():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match="calibration"):
        netslim.prune_(model, Unstructured(ratio=0.5, reconstruct=True))
    with pytest.raises(ConfigError, match="calibration"):
        netslim.prune_(
            model, Channels(ratio=0.5, reconstruct=True), example_inputs=torch.randn(1, 12)
        )
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reconstruct_flag_is_validated():
    with pytest.raises(ConfigError, match="reconstruct"):
        Unstructured(reconstruct="yes")
    with pytest.raises(ConfigError, match="reconstruct"):
        Channels(reconstruct=1)
    for value in (None, True, False):  # None: auto; the dict round trip keeps each
        for cls in (Unstructured, Channels):
            config = cls(reconstruct=value)
            assert cls.from_dict(config.to_dict()) == config
    assert Unstructured().reconstruct is None and Channels().reconstruct is None


# ---- one default for the API and the command line -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "finetunes", "expected"),
    [
        ("channel", True, False, True),
        ("channel", True, True, True),
        ("slimming", True, True, True),
        ("channel", False, False, False),
        ("slimming", False, True, False),
        ("unstructured", True, False, True),
        ("unstructured", True, True, False),
        ("unstructured", False, False, False),
        ("unstructured", False, True, False),
    ],
)
def test_auto_reconstruct_table(kind, data, finetunes, expected):
    from netslim.reconstruct import auto_reconstruct

    def decide(requested):
        return auto_reconstruct(
            requested, method_kind=kind, has_calibration=data, finetunes_after=finetunes
        )

    assert decide(None) is expected
    assert decide(False) is False  # explicit off always wins
    if data:
        assert decide(True) is True
    else:
        with pytest.raises(ConfigError, match="train_loader=loader.*--data"):
            decide(True)


def test_auto_reconstruct_refuses_unknown_kinds_and_values():
    from netslim.reconstruct import auto_reconstruct

    with pytest.raises(ConfigError, match="layer"):
        auto_reconstruct(None, method_kind="layer", has_calibration=True, finetunes_after=False)
    with pytest.raises(ConfigError, match="reconstruct must be"):
        auto_reconstruct(1, method_kind="channel", has_calibration=True, finetunes_after=False)


def _dense_gap(model: nn.Module, dense: nn.Module, batches) -> float:
    with torch.no_grad():
        model.eval(), dense.eval()
        return sum(float((model(x) - dense(x)).norm()) for x, _ in batches)


@pytest.mark.parametrize("method", ["unstructured", "channel"])
def test_api_with_a_loader_reconstructs_by_default(method):
    """``prune_`` with calibration batches refits as ``netslim prune --data`` does: the default
    gives the reconstruct=True model, not the plain one, and it is closer to the dense outputs
    on the calibration batches."""
    dense = _cnn()
    batches = _batches(3, (8, 3, 12, 12))
    with torch.no_grad():  # BN statistics of the data, as a trained model has
        dense[1].momentum = None
        for x, _ in batches:
            dense.train()(x)
    example = torch.randn(1, 3, 12, 12)
    models = {}
    reports = {}
    for value in (None, True, False):
        if method == "unstructured":
            config = Unstructured(ratio=0.7, scope="layer", reconstruct=value)
        else:
            config = Channels(ratio=0.5, reconstruct=value)
        models[value] = copy.deepcopy(dense)
        reports[value] = netslim.prune_(
            models[value], config, example_inputs=example, train_loader=batches
        )
    auto, on, off = (models[v].state_dict() for v in (None, True, False))
    assert all(torch.equal(auto[k], on[k]) for k in on)
    assert any(not torch.equal(auto[k], off[k]) for k in off)
    assert "reconstruction" in reports[None] and "reconstruction" not in reports[False]
    gap = {v: _dense_gap(models[v], dense, batches) for v in (None, False)}
    assert gap[None] < gap[False]
    if method == "unstructured":  # the record says what was done, not "auto"
        assert reports[None]["config"]["reconstruct"] is True


@pytest.mark.parametrize("method", ["unstructured", "channel"])
def test_api_without_a_loader_does_not_reconstruct(method):
    dense = _cnn()
    example = torch.randn(1, 3, 12, 12)
    models = {}
    for value in (None, False):
        if method == "unstructured":
            config = Unstructured(ratio=0.7, scope="layer", reconstruct=value)
        else:
            config = Channels(ratio=0.5, reconstruct=value)
        models[value] = copy.deepcopy(dense)
        report = netslim.prune_(models[value], config, example_inputs=example)
        assert "reconstruction" not in report
    auto, off = models[None].state_dict(), models[False].state_dict()
    assert list(auto) == list(off) and all(torch.equal(auto[k], off[k]) for k in off)
    from pruned import param_count, weights, zero_fraction

    if method == "unstructured":  # both pruned (equal because both stayed dense would pass)
        assert zero_fraction(weights(models[None])) > 0.6
    else:
        assert param_count(models[None]) < 0.8 * param_count(dense)


def test_session_resolves_auto_as_a_job_that_fine_tunes():
    """A training-loop session fine-tunes after each prune: channels refit with data,
    unstructured masks do not (the job's rule with --finetune-epochs > 0)."""
    from netslim.integrations.session import _resolve_reconstruct

    loader = _batches(2)
    assert _resolve_reconstruct(Channels(), loader).reconstruct is True
    assert _resolve_reconstruct(Channels(), None).reconstruct is False
    assert _resolve_reconstruct(Unstructured(), loader).reconstruct is False
    assert _resolve_reconstruct(Unstructured(reconstruct=True), loader).reconstruct is True
    assert _resolve_reconstruct(Channels(reconstruct=False), loader).reconstruct is False


def test_masks_records_keep_the_resolved_flag_and_load(tmp_path):
    """The history records the resolved ``reconstruct`` (False without data, as every record
    saved before the auto default did; True with a loader); both replay to the same tensors."""
    from netslim.core.history import get_history

    for loader in (None, [(torch.randn(16, 1, 28, 28), torch.zeros(16, dtype=torch.long))]):
        model = netslim.build_model("zoo:lenet300")
        netslim.prune_(model, Unstructured(ratio=0.5), train_loader=loader)
        assert get_history(model)[-1]["config"]["reconstruct"] is (loader is not None)
        out = tmp_path / ("plain" if loader is None else "refit")
        netslim.save(model, out)
        state = netslim.load(out).state_dict()
        assert list(state) == list(model.state_dict())
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# ---- the command line ------------------------------------------------------------------------

FAST = [
    "--data",
    "synthetic",
    "--limit-train",
    "256",
    "--limit-test",
    "128",
    "--epochs",
    "1",
    "--finetune-epochs",
    "1",
    "--no-progress",
    "--no-latency",
]


def test_cli_reconstruct_reports_accuracy_right_after_pruning(tmp_path, capsys):
    from netslim.cli.main import main

    out = tmp_path / "out"
    code = main(
        ["prune", "zoo:lenet5", "--method", "channel", "--ratio", "0.5", "--reconstruct"]
        + [*FAST, "--out", str(out)]
    )
    assert code == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["reconstruct"] is True
    assert 0.0 <= report["accuracy_after_prune"] <= 1.0
    layers = report["steps"][0]["reconstruction"]["layers"]
    assert layers and all(v["error_after"] <= v["error_before"] for v in layers.values())
    assert "right after pruning" in capsys.readouterr().out
    from pruned import param_count

    dense = netslim.build_model("zoo:lenet5")
    assert param_count(netslim.load(out / "model")) < 0.6 * param_count(dense)  # ratio 0.5


def test_cli_reconstruct_refuses_methods_it_cannot_refit(tmp_path, capsys):
    from netslim.cli.main import main

    out = tmp_path / "out"
    code = main(
        ["prune", "zoo:lenet5", "--method", "layer", "--reconstruct", *FAST, "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--reconstruct" in err and "\n" not in err
    assert not out.exists()


def test_reconstruction_aims_at_the_reference_model_when_given():
    """A schedule passes ``reference=dense`` so every step fits the original outputs, not the
    previous step's; with nothing pruned the refit reproduces the reference's layer."""
    dense = _mlp()
    target = copy.deepcopy(dense)
    with torch.no_grad():
        target[4].weight.mul_(2.0)
        target[4].bias.add_(0.5)
    model = copy.deepcopy(dense)
    batches = _batches(8, (32, 12))
    netslim.prune_(
        model,
        Unstructured(ratio=0.0, scope="layer", include_classifier=True, reconstruct=True),
        train_loader=batches,
        reference=target,
    )
    assert _error(model, target, "4", batches) < 1e-3 < _error(dense, target, "4", batches)


def test_job_default_reconstructs_where_the_bench_shows_it_wins():
    from netslim.jobs.settings import JobSettings

    def resolved(**kw):
        return JobSettings(model="zoo:lenet5", **kw).reconstruct

    assert resolved(method="channel") is True
    assert resolved(method="slimming") is True
    assert resolved(method="channel", data=None) is False
    assert resolved(method="channel", reconstruct=False) is False
    assert resolved(method="unstructured", finetune_epochs=1) is False
    assert resolved(method="unstructured", finetune_epochs=0) is True
    assert resolved(method="layer") is None  # not a setting of layer pruning
    with pytest.raises(ConfigError, match="--data"):
        resolved(method="unstructured", reconstruct=True, data=None)
