"""Structural pruning API: config validation, transactions, plan replay, method registration."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netslim.structural.apply as apply_mod
from netslim.core import history
from netslim.core.registry import PruneContext
from netslim.errors import ArtifactError, ConfigError, PruningError
from netslim.methods import handler_for
from netslim.structural import (
    Channels,
    PruningPlan,
    apply_plan,
    groups,
    make_plan,
    prune,
    prune_and_compare,
)
from netslim.structural.engine import planning_inputs


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.c1(x)))
        x = F.relu(self.c2(x)) + x
        return self.fc(x.mean((2, 3)))


X = (torch.randn(2, 3, 8, 8),)


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: id(p) for n, p in model.named_parameters()},
        {n: dict(vars(m)) for n, m in model.named_modules()},
    )


def assert_same(model: nn.Module, snap) -> None:
    state, ids, attrs = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k in state:
        assert now[k].shape == state[k].shape and torch.equal(now[k], state[k]), k
    assert {n: id(p) for n, p in model.named_parameters()} == ids
    for n, m in model.named_modules():
        for key, value in attrs[n].items():
            if key.startswith("_") or isinstance(value, (torch.Tensor, dict)):
                continue
            assert vars(m)[key] == value, (n, key)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": 1.0},
        {"ratio": -0.1},
        {"criterion": "no_such_criterion"},
        {"scope": "everywhere"},
        {"round_to": 0},
        {"target_macs": 1.5},
        {"target_macs": 0.5, "target_params": 0.5},
        {"per_module": {"c1": 1.0}},
    ],
)
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        Channels(**kwargs)


def test_unknown_module_names_are_config_errors():
    with pytest.raises(ConfigError, match="c3"):
        prune(Net(), X, Channels(ignore=("c3",)))
    with pytest.raises(ConfigError, match="nope"):
        prune(Net(), X, Channels(per_module={"nope": 0.5}))


def test_wrong_example_inputs_say_what_was_given():
    model = Net()
    snap = snapshot(model)
    with pytest.raises(ConfigError, match=r"\(2, 5, 8, 8\)"):
        prune(model, (torch.randn(2, 5, 8, 8),), Channels())
    with pytest.raises(ConfigError, match="example inputs"):
        prune(model, None, Channels())
    assert_same(model, snap)


def test_ignore_and_per_module():
    model = Net().eval()
    plan, _ = prune(model, X, Channels(ratio=0.5, ignore=("c2",), per_module={"c1": 0.25}))
    assert model.c1.out_channels == 16 and model.c2.out_channels == 16  # c2 ties c1 (residual)
    model = Net().eval()
    prune(model, X, Channels(ratio=0.5, per_module={"c1": 0.25}))
    assert model.c1.out_channels == 12


def test_a_group_is_never_emptied():
    model = Net().eval()
    prune(model, X, Channels(ratio=0.99))
    assert model.c1.out_channels == 1
    model = Net().eval()
    prune(model, X, Channels(ratio=0.99, round_to=4))
    assert model.c1.out_channels == 4


@pytest.mark.parametrize("target", ["target_macs", "target_params"])
def test_targets(target):
    tv = pytest.importorskip("torchvision")
    from torch.utils.flop_counter import FlopCounterMode

    model = tv.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)

    def macs(m):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(x)
        return fc.get_total_flops() // 2

    before_macs, before_params = macs(model), sum(p.numel() for p in model.parameters())
    _, report = prune(model, (x,), Channels(**{target: 0.5}))
    got = (
        macs(model) / before_macs
        if target == "target_macs"
        else (sum(p.numel() for p in model.parameters()) / before_params)
    )
    assert 0.4 <= got <= 0.5
    if target == "target_macs":
        assert report["macs"]["after"] == macs(model)  # analytic count == flop counter


def test_local_scope_with_a_target_searches_one_uniform_ratio():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(num_classes=10).eval()
    x = (torch.randn(1, 3, 32, 32),)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    plan, report = prune(model, x, Channels(target_macs=0.5, scope="local", round_to=4))
    assert 0.4 <= report["macs"]["after"] / report["macs"]["before"] <= 0.5
    kept = {
        n: m.out_channels / widths[n] for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
    }
    # one ratio everywhere: every layer keeps the same fraction (up to round_to of 4)
    assert max(kept.values()) - min(kept.values()) <= 4 / 64


def test_failure_mid_apply_restores_everything(monkeypatch):
    model = Net().eval()
    snap = snapshot(model)
    calls = {"n": 0}
    real = apply_mod._apply_change

    def flaky(change, log):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected")
        real(change, log)

    monkeypatch.setattr(apply_mod, "_apply_change", flaky)
    with pytest.raises(PruningError) as err:
        prune(model, X, Channels())
    assert "injected" in str(err.value) and err.value.module in {"c1", "bn", "c2", "fc"}
    assert str(err.value).startswith(err.value.module)
    assert_same(model, snap)
    with torch.no_grad():
        model(*X)


class HardCoded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        left, _ = torch.split(self.a(x), 8, dim=1)  # a size fixed in code
        return self.b(left)


def test_sizes_fixed_in_code_fail_loudly_and_restore():
    model = HardCoded().eval()
    snap = snapshot(model)
    plan = PruningPlan({"a.weight:0": [0, 2, 4, 6]}, {"a.weight:0": 8})  # both halves tied
    with pytest.raises(PruningError, match="HardCoded"):
        apply_plan(model, plan, X)
    assert_same(model, snap)
    # prune() notices, makes that op a boundary, and plans again
    _, report = prune(model, X, Channels())
    assert model.a.out_channels == 16
    assert any("fixed in code" in b["reason"] for b in report["boundaries"])


def test_plan_round_trip_on_a_fresh_model():
    torch.manual_seed(1)
    model = Net().eval()
    fresh = copy.deepcopy(model)
    plan, _ = prune(model, X, Channels(ratio=0.5, criterion="random", seed=3))
    data = json.loads(json.dumps(plan.to_dict()))
    replay = PruningPlan.from_dict(data)
    apply_plan(fresh, replay, X)
    a, b = model.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(model(*X), fresh(*X))


def test_plan_for_another_model_is_rejected():
    plan = PruningPlan({"c1.weight:0": [0, 1]}, {"c1.weight:0": 32})
    model = Net()
    snap = snapshot(model)
    with pytest.raises(PruningError, match="size 32"):
        apply_plan(model, plan, X)
    assert_same(model, snap)
    with pytest.raises(ArtifactError):
        PruningPlan.from_dict({"version": 1, "groups": {"x:0": {"size": 2, "keep": [5]}}})


def test_make_plan_is_pure_and_deterministic():
    model = Net().eval()
    snap = snapshot(model)
    p1, _ = make_plan(model, X, Channels(criterion="random", seed=7))
    p2, _ = make_plan(model, X, Channels(criterion="random", seed=7))
    assert p1.to_dict() == p2.to_dict()
    assert_same(model, snap)
    assert [g.id for g in groups(model, X)] == ["c1.weight:0"]


def test_planning_inputs_score_without_changing_the_model():
    model = Net().eval()
    snap = snapshot(model)
    free = planning_inputs(model, X, Channels(criterion="l1"))
    assert [g.id for g in free.groups] == list(free.ranked) == ["c1.weight:0"]
    assert free.scores["c1.weight:0"].shape == (16,) and free.fixed == {}
    fixed = planning_inputs(model, X, Channels(per_module={"c1": 0.5}))
    assert fixed.fixed == {"c1.weight:0": 8} and fixed.ranked == {}
    assert_same(model, snap)


def test_registered_handler_records_history():
    model = Net().eval()
    cfg = Channels(ratio=0.25)
    report = handler_for(cfg)(model, cfg, PruneContext(example_inputs=X))
    assert report["params"]["after"] < report["params"]["before"]
    rec = history.get_history(model)[-1]
    assert rec["kind"] == "structural" and rec["example_shapes"] == [[2, 3, 8, 8]]
    json.dumps(rec)
    fresh = Net()
    apply_plan(fresh, PruningPlan.from_dict(rec["plan"]), X)
    assert fresh.c1.out_channels == model.c1.out_channels == 12
    with pytest.raises(ConfigError, match="example inputs"):
        handler_for(cfg)(Net(), cfg, PruneContext())


def test_train_mode_and_requires_grad_survive():
    model = Net().train()
    model.c1.weight.requires_grad_(False)
    diff, _, _ = prune_and_compare(model, X)
    assert diff <= 1e-5
    assert not model.c1.weight.requires_grad and model.c2.weight.requires_grad
    model.train()
    model(*X).sum().backward()
    assert model.c2.weight.grad.shape == model.c2.weight.shape


def test_history_record_replays_on_a_fresh_model():
    from netslim.structural.method import replay_plan

    model = Net().eval()
    cfg = Channels(ratio=0.5)
    handler_for(cfg)(model, cfg, PruneContext(example_inputs=X))
    fresh = Net()
    replay_plan(fresh, json.loads(json.dumps(history.get_history(model)[-1])))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(*X), model(*X))
    with pytest.raises(ArtifactError):
        replay_plan(
            Net(), {"plan": {"groups": {}}, "example_shapes": [[1]], "example_dtypes": ["nope"]}
        )


def test_apply_notes_replacements_for_optimizer_state():
    """Adam moments follow the kept channels: sliced like the weights, on the new Parameters."""
    from netslim.training.optim_state import shrink_optimizer_state, take_replacements

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(x).square().mean().backward()
    opt.step()
    old_w, old_next = model[0].weight, model[3].weight
    old_avg = opt.state[old_w]["exp_avg"].clone()
    old_next_avg = opt.state[old_next]["exp_avg"].clone()
    plan, _ = prune(model.eval(), (x,), Channels(ratio=0.5))
    notes = take_replacements(model)
    assert notes[old_w][0] is model[0].weight and notes[old_next][0] is model[3].weight
    assert shrink_optimizer_state(opt, notes) == len(notes)
    kept = torch.tensor(next(iter(plan.keep.values())))
    assert torch.equal(opt.state[model[0].weight]["exp_avg"], old_avg[kept])
    assert torch.equal(opt.state[model[3].weight]["exp_avg"], old_next_avg[:, kept])
    model.train()
    model(x).square().mean().backward()
    opt.step()  # the optimizer works on the pruned model


def test_one_shot_prune_frees_the_removed_full_size_tensors():
    """With no optimizer holding them, the replaced parameters are freed, not kept on the model."""
    import gc
    import weakref

    from netslim.training.optim_state import take_replacements

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    old = weakref.ref(model[0].weight)
    prune(model.eval(), (torch.randn(2, 3, 8, 8),), Channels(ratio=0.5))
    gc.collect()
    assert old() is None
    assert take_replacements(model) == {}


@pytest.mark.parametrize("enabled", [True, False])
def test_the_engine_leaves_the_garbage_collector_as_it_found_it(enabled):
    """The collector is paused while the engine runs; it must come back as it was, also when
    pruning fails (a disabled collector would leak the user's reference cycles)."""
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        prune(Net().eval(), X, Channels(ratio=0.5))
        assert gc.isenabled() is enabled
        with pytest.raises(ConfigError):
            prune(Net().eval(), X, Channels(ignore=("no_such_module",)))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
