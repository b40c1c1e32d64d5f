"""netslim.unstructured: masks, criteria, global/layer/N:M allocation, handler, interop."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize, prune

from netslim.core.history import get_history
from netslim.errors import ConfigError, PruningError, UnsupportedModelError
from netslim.methods import handler_for
from netslim.unstructured import (
    Unstructured,
    WeightMask,
    apply_masks,
    attach_mask,
    check_nm,
    compute_masks,
    from_torch_prune,
    get_criterion,
    iter_masks,
    make_permanent,
    nm_mask,
    register_criterion,
    replay_masks,
    sparsity_report,
    to_torch_prune,
)
from netslim.unstructured.criteria import Criterion
from netslim.unstructured.method import prune as prune_unstructured


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4)
    )


def cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3),
    )  # fmt: skip


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Effective weight of every masked or maskable layer (what the forward pass uses)."""
    return {
        name: m.weight.detach().clone()
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def pruned(mask: torch.Tensor) -> int:
    return mask.numel() - int(mask.count_nonzero())


# --- masks -----------------------------------------------------------------------------------


def test_masks_survive_optimizer_step() -> None:
    model = mlp()
    prune_unstructured(model, Unstructured(ratio=0.6))
    masks = iter_masks(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 16)).pow(2).sum().backward()
        opt.step()
    assert masks and all(pruned(m) > 0 for m in masks.values())
    for key, mask in masks.items():
        layer = model.get_submodule(key.rpartition(".")[0])
        assert torch.equal(layer.weight[~mask], torch.zeros(pruned(mask)))
        assert layer.weight[mask].ne(0).all()


def test_state_dict_round_trip_after_replay() -> None:
    model = cnn()
    prune_unstructured(model, Unstructured(ratio=0.7))
    state = model.state_dict()
    fresh = cnn(seed=1)
    for step in json.loads(json.dumps(get_history(model))):  # history must be JSON
        replay_masks(fresh, step)
    fresh.load_state_dict(state)
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(fresh(x), model(x))
    assert {k: m.tolist() for k, m in iter_masks(fresh).items()} == {
        k: m.tolist() for k, m in iter_masks(model).items()
    }


def test_attach_mask_replaces_and_checks_shape() -> None:
    layer = nn.Linear(4, 3)
    attach_mask(layer, "weight", torch.ones(3, 4, dtype=torch.bool))
    attach_mask(layer, "weight", torch.zeros(3, 4, dtype=torch.bool))
    assert len(layer.parametrizations.weight) == 1
    assert isinstance(layer.parametrizations.weight[0], WeightMask)
    assert layer.weight.abs().sum() == 0
    with pytest.raises(ConfigError, match="shape"):
        attach_mask(layer, "weight", torch.ones(4, 3, dtype=torch.bool))


def test_make_permanent_leaves_plain_tensors() -> None:
    model = mlp()
    prune_unstructured(model, Unstructured(ratio=0.5))
    expected = weights(model)
    params_before = {id(p) for p in model.parameters()}
    assert make_permanent(model) == ["0.weight", "2.weight"]
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(type(m.weight) is nn.Parameter for m in model if isinstance(m, nn.Linear))
    assert {k: torch.equal(v, expected[k]) for k, v in weights(model).items()} == dict.fromkeys(
        expected, True
    )
    assert {id(p) for p in model.parameters()} == params_before  # optimizers stay valid
    assert sorted(model.state_dict()) == sorted(mlp().state_dict())


def test_sparsity_report() -> None:
    model = mlp()
    mask = torch.ones(32, 16, dtype=torch.bool)
    mask[0] = False
    attach_mask(model[0], "weight", mask)
    report = sparsity_report(model)
    assert report["layers"] == {"0.weight": {"numel": 512, "pruned": 16, "sparsity": 16 / 512}}
    assert report["overall"]["sparsity"] == 16 / 512


# --- allocation ------------------------------------------------------------------------------


def test_global_and_layer_exact_fractions() -> None:
    model = mlp()
    with torch.no_grad():
        model[0].weight.mul_(10)  # big weights: global keeps more of layer 0
    n0, n2 = 32 * 16, 24 * 32
    layer = compute_masks(model, Unstructured(ratio=0.3, scope="layer"))
    assert list(layer) == ["0.weight", "2.weight"]  # the classifier is left alone
    assert pruned(layer["0.weight"]) == round(0.3 * n0)
    assert pruned(layer["2.weight"]) == round(0.3 * n2)
    glob = compute_masks(model, Unstructured(ratio=0.3))
    assert pruned(glob["0.weight"]) + pruned(glob["2.weight"]) == round(0.3 * (n0 + n2))
    assert pruned(glob["0.weight"]) / n0 < 0.1 < 0.3 < pruned(glob["2.weight"]) / n2


def test_classifier_ignore_and_bias_options() -> None:
    model = mlp()
    masks = compute_masks(
        model, Unstructured(include_classifier=True, include_bias=True, ignore=("0",))
    )
    assert list(masks) == ["2.weight", "2.bias", "4.weight", "4.bias"]
    container = nn.Sequential(nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 4), nn.Linear(4, 2))
    assert list(compute_masks(container, Unstructured(ignore=("0",)))) == ["1.weight"]


def test_global_l1_matches_torch_prune() -> None:
    model = cnn()
    reference = copy.deepcopy(model)
    layers = [reference[0], reference[2], reference[6]]
    prune.global_unstructured(
        [(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=0.37
    )
    masks = compute_masks(model, Unstructured(ratio=0.37))
    assert list(masks) == ["0.weight", "2.weight", "6.weight"]
    for key, layer in zip(masks, layers, strict=True):
        assert torch.equal(masks[key], layer.weight_mask.bool()), key


def test_ties_broken_deterministically_by_position() -> None:
    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    mask = compute_masks(model, Unstructured(ratio=0.5))["0.weight"]
    assert mask.flatten().tolist() == [False] * 4 + [True] * 4


@settings(max_examples=30, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=3),
    ratio=st.floats(0.0, 0.99),
    scope=st.sampled_from(["global", "layer"]),
    seed=st.integers(0, 1000),
)
def test_fraction_pruned_is_round_ratio_n(shapes, ratio, scope, seed) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(i, o) for o, i in shapes])  # shapes need not chain
    config = Unstructured(ratio=ratio, scope=scope, include_classifier=True)
    masks = compute_masks(model, config)
    if scope == "global":
        assert sum(map(pruned, masks.values())) == round(ratio * sum(o * i for o, i in shapes))
    else:
        assert [pruned(m) for m in masks.values()] == [round(ratio * o * i) for o, i in shapes]


def test_masks_are_monotone() -> None:
    model = mlp()
    prune_unstructured(model, Unstructured(ratio=0.5))
    first = {k: m.clone() for k, m in iter_masks(model).items()}
    prune_unstructured(model, Unstructured(ratio=0.3))  # lower ratio: nothing grows back
    assert all(torch.equal(m, first[k]) for k, m in iter_masks(model).items())
    with torch.no_grad():  # reshuffle magnitudes so the new ranking disagrees with the old one
        model[0].parametrizations.weight.original.copy_(torch.randn(32, 16))
    prune_unstructured(model, Unstructured(ratio=0.6, scope="layer"))
    for key, mask in iter_masks(model).items():
        assert not (mask & ~first[key]).any()
        assert pruned(mask) == round(0.6 * mask.numel())
    assert len(get_history(model)) == 3


def test_random_criterion_is_seeded() -> None:
    a = compute_masks(mlp(), Unstructured(criterion="random", seed=3))
    b = compute_masks(mlp(seed=5), Unstructured(criterion="random", seed=3))
    c = compute_masks(mlp(), Unstructured(criterion="random", seed=4))
    assert all(torch.equal(a[k], b[k]) for k in a)  # independent of the weights
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert sum(map(pruned, a.values())) == round(0.5 * (512 + 768))


def test_criterion_registry_is_open() -> None:
    @register_criterion("test_neg_l1")
    class NegL1(Criterion):
        def scores(self, weight, *, module=None, name=None):
            return -weight.abs()

    model = mlp()
    keep_small = compute_masks(model, Unstructured(criterion="test_neg_l1", scope="layer"))
    keep_big = compute_masks(model, Unstructured(scope="layer"))
    assert all(torch.equal(keep_small[k], ~keep_big[k]) for k in keep_big)
    assert get_criterion("l1").name == "l1"
    with pytest.raises(ConfigError, match="l1, l2, lamp, random"):
        get_criterion("nope")


# --- N:M -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_pattern_holds(n: int, m: int) -> None:
    model = cnn()
    assert not check_nm(model[2].weight, n, m)
    summary = prune_unstructured(model, Unstructured(nm=(n, m), ignore=("0",)))
    assert summary["sparsity"] == pytest.approx(1 - n / m)
    assert list(iter_masks(model)) == ["2.weight", "6.weight"]
    for key in iter_masks(model):
        assert check_nm(model.get_submodule(key[:-7]).weight, n, m), key


def test_nm_mask_keeps_largest_along_inputs() -> None:
    scores = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0, 0.0, 5.0, 6.0]])
    assert nm_mask(scores, 2, 4).int().tolist() == [[0, 1, 1, 0, 0, 0, 1, 1]]
    conv = torch.arange(2 * 4 * 3 * 3, dtype=torch.float).reshape(2, 4, 3, 3)
    mask = nm_mask(conv, 1, 4)  # groups run over the 4 input channels at each position
    assert mask.sum(dim=1).eq(1).all() and mask[:, 3].all()
    assert check_nm(torch.tensor([[1.0, 0.0, 0.0, 2.0]]), 2, 4)
    assert not check_nm(torch.tensor([[1.0, 1.0, 0.0, 2.0]]), 2, 4)
    assert not check_nm(torch.ones(2, 6), 2, 4)


def test_nm_indivisible_width_names_layer() -> None:
    model = cnn()
    before = snapshot(model)
    with pytest.raises(ConfigError, match=r"divisible by 8.*0\.weight \(4\).*--ignore 0"):
        prune_unstructured(model, Unstructured(nm=(4, 8)))
    assert_same_state(model, before)
    assert get_history(model) == []


# --- bad inputs leave the model unchanged ------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": 1.0},
        {"ratio": -0.1},
        {"ratio": float("nan")},
        {"ratio": True},
        {"scope": "model"},
        {"criterion": "taylor_typo"},
        {"nm": (4, 4)},
        {"nm": (5, 4)},
        {"nm": (0, 4)},
        {"nm": (2,)},
        {"seed": 1.5},
    ],
)
def test_bad_config_raises_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Unstructured(**kwargs)


def test_config_normalises_json_values() -> None:
    config = Unstructured(nm=[2, 4], ignore=["0"], ratio=0)
    assert config.nm == (2, 4) and config.ignore == ("0",) and config.ratio == 0.0
    assert Unstructured(ignore="fc").ignore == ("fc",)


def test_model_without_prunable_weights() -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU())
    before = snapshot(model)
    with pytest.raises(UnsupportedModelError):
        prune_unstructured(model, Unstructured())
    assert_same_state(model, before)
    with pytest.raises(UnsupportedModelError, match="include_classifier"):
        prune_unstructured(nn.Linear(3, 2), Unstructured())


def test_unknown_ignore_name() -> None:
    model = mlp()
    before = snapshot(model)
    with pytest.raises(ConfigError, match="'fc9'"):
        prune_unstructured(model, Unstructured(ignore=("fc9",)))
    assert_same_state(model, before)
    assert get_history(model) == []


def test_apply_masks_is_all_or_nothing() -> None:
    model = mlp()
    prune_unstructured(model, Unstructured(ratio=0.2))
    before = snapshot(model)
    good = torch.zeros(24, 32, dtype=torch.bool)
    bad = torch.ones(5, 5, dtype=torch.bool)
    fresh = torch.ones(4, 24, dtype=torch.bool)
    with pytest.raises(ConfigError):
        apply_masks(model, {"2.weight": good, "4.weight": fresh, "0.weight": bad})
    assert_same_state(model, before)
    assert not parametrize.is_parametrized(model[4])
    with pytest.raises(ConfigError):
        apply_masks(model, {"9.weight": good})


def test_apply_masks_rolls_back_on_late_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import netslim.unstructured.method as method

    model = mlp()
    prune_unstructured(model, Unstructured(ratio=0.2, ignore=("2",)))
    before = snapshot(model)
    calls = []

    def flaky(module, name, mask):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("device lost")
        attach_mask(module, name, mask)

    monkeypatch.setattr(method, "attach_mask", flaky)
    masks = {
        k: torch.zeros_like(m.weight, dtype=torch.bool)
        for k, m in (("0.weight", model[0]), ("2.weight", model[2]), ("4.weight", model[4]))
    }
    with pytest.raises(PruningError, match="4.weight: device lost"):
        apply_masks(model, masks)
    assert_same_state(model, before)
    assert type(model[2]) is nn.Linear and type(model[4]) is nn.Linear


def test_handler_registered_and_history_recorded() -> None:
    config = Unstructured(ratio=0.4)
    assert handler_for(config) is prune_unstructured
    model = mlp()
    summary = prune_unstructured(model, config)
    assert summary["sparsity"] == pytest.approx(round(0.4 * 1280) / 1280)
    assert set(summary["layers"]) == {"0.weight", "2.weight"}
    (step,) = get_history(model)
    assert step["kind"] == "masks" and step["targets"] == ["0.weight", "2.weight"]
    assert step["config"]["ratio"] == 0.4
    json.dumps(summary)


# --- torch.nn.utils.prune interop ------------------------------------------------------------


def test_torch_prune_round_trip_bit_identical() -> None:
    model = cnn()
    layers = [model[0], model[2], model[6]]
    prune.global_unstructured([(m, "weight") for m in layers], prune.L1Unstructured, amount=0.5)
    prune.random_unstructured(model[2], "weight", amount=0.3)  # a PruningContainer
    originals = [m.weight_orig for m in layers]
    expected = {k: v.view(torch.int32).clone() for k, v in weights(model).items()}
    x = torch.randn(2, 4, 5, 5)
    out = model(x)

    assert from_torch_prune(model) == ["0.weight", "2.weight", "6.weight"]
    assert all(not m._forward_pre_hooks and not hasattr(m, "weight_orig") for m in layers)
    assert [m.parametrizations.weight.original for m in layers] == originals  # same objects
    assert all(torch.equal(v.view(torch.int32), expected[k]) for k, v in weights(model).items())
    assert torch.equal(model(x), out)

    assert to_torch_prune(model) == ["0.weight", "2.weight", "6.weight"]
    assert all(not parametrize.is_parametrized(m) and hasattr(m, "weight_mask") for m in layers)
    model(x)  # torch's hooks recompute weight
    assert all(torch.equal(v.view(torch.int32), expected[k]) for k, v in weights(model).items())
    assert [m.weight_orig for m in layers] == originals


def test_make_permanent_on_a_deepcopy_leaves_the_original_intact() -> None:
    from netslim.core.masks import attach_mask, iter_masks, make_permanent

    original = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    attach_mask(original[0], "weight", torch.rand(4, 4) > 0.5)
    expected = original[0].weight.detach().clone()
    clone = copy.deepcopy(original)
    make_permanent(clone)
    assert torch.equal(original[0].weight, expected)
    assert "0.weight" in iter_masks(original)
    assert torch.equal(clone[0].weight, expected) and not iter_masks(clone)
