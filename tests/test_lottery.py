"""Lottery tickets: mask makers, IMP rounds, rewinding, controls, checkpoints/resume, export, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import netslim
from netslim.cli.main import main
from netslim.core.masks import iter_masks
from netslim.data import make_loaders
from netslim.errors import ConfigError
from netslim.lottery import (
    ChannelMasks,
    Lottery,
    LotteryRun,
    MagnitudeMasks,
    export_ticket,
    get_maker,
)

ITERS = 8


@pytest.fixture(scope="module")
def loaders():
    train, test = make_loaders("synthetic", batch_size=32, limit_train=128, limit_test=64)
    return train, test


def _run(loaders, tmp: Path | None = None, on_round=None, **settings) -> LotteryRun:
    settings = {"rounds": 2, "rate": 0.5, "iterations": ITERS, "eval_every": 4, **settings}
    train, test = loaders
    torch.manual_seed(0)  # the same initial weights in every run built here
    return LotteryRun(
        netslim.build_model("zoo:lenet300"),
        Lottery(**settings),
        train,
        test_loader=test,
        checkpoint_dir=tmp,
        on_round=on_round,
    )


def _effective(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- mask makers (no training) ------------------------------------------------------------


def _weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(6, 10, generator=g),
        "b.weight": torch.randn(4, 3, 3, 3, generator=g),
    }


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_maker_prunes_rate_of_remaining_and_only_shrinks(scope: str) -> None:
    maker, weights = MagnitudeMasks(), _weights()
    masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()}
    kept = [sum(int(m.sum()) for m in masks.values())]
    for _ in range(4):
        new = maker.prune(weights, masks, 0.3, scope)
        for key in masks:
            assert not (new[key] & ~masks[key]).any(), "a pruned weight came back"
            assert new[key].any(), "every layer keeps at least one weight"
        masks = new
        kept.append(sum(int(m.sum()) for m in masks.values()))
    for before, after in zip(kept, kept[1:], strict=False):
        assert abs((before - after) - 0.3 * before) <= 2  # rounding, per layer
    survivors = masks["a.weight"]
    assert weights["a.weight"].abs()[survivors].min() >= weights["a.weight"].abs()[~survivors].max()


def test_channel_maker_drops_whole_rows_by_norm() -> None:
    maker, weights = get_maker("channel-l2"), _weights()
    assert isinstance(maker, ChannelMasks) and maker.name == "channel-l2"
    masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()}
    masks = maker.prune(weights, masks, 0.5, "layer")
    for mask in masks.values():
        rows = mask.reshape(mask.shape[0], -1)
        assert (rows.all(dim=1) | ~rows.any(dim=1)).all(), "a channel is kept or dropped whole"
        assert int(rows.any(dim=1).sum()) == mask.shape[0] - round(0.5 * mask.shape[0])
    norms = weights["a.weight"].norm(dim=1)
    kept = masks["a.weight"].any(dim=1)
    assert norms[kept].min() >= norms[~kept].max()


def test_random_like_keeps_per_layer_unit_counts() -> None:
    for maker in (MagnitudeMasks(), ChannelMasks(1)):
        weights = _weights()
        ones = {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()}
        ticket = maker.prune(weights, ones, 0.6, "global")
        rand = maker.random_like(ticket, torch.Generator().manual_seed(1))
        assert maker.kept_units(rand) == maker.kept_units(ticket)
        assert any(not torch.equal(rand[k], ticket[k]) for k in ticket)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rate": 0.0}, "rate"),
        ({"rate": 1.0}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"rounds": 0}, "rounds"),
        ({"masks": "astrology"}, "astrology"),
        ({"rewind": "sometimes"}, "rewind"),
        ({"controls": ("placebo",)}, "placebo"),
        ({"rewind_iter": -1}, "rewind_iter"),
    ],
)
def test_bad_config(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Lottery(**settings)


def test_rewind_iteration_beyond_training_length(loaders, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="beyond the training length"):
        _run(loaders, tmp_path / "ck", rewind_iter=ITERS)
    assert not (tmp_path / "ck").exists()


# --- IMP ---------------------------------------------------------------------------------


def test_rounds_shrink_masks_and_record_reach_time(loaders) -> None:
    seen: list[dict[str, torch.Tensor]] = []
    run = _run(loaders, rounds=3, on_round=lambda rec: seen.append(iter_masks(run.model)))
    result = run.run()
    remaining = [result["dense"]["weights_remaining"]] + [
        r["weights_remaining"] for r in result["rounds"]
    ]
    assert remaining[0] == 1.0 and all(
        a > b for a, b in zip(remaining, remaining[1:], strict=False)
    )
    for before, after in zip(seen, seen[1:], strict=False):
        for key in before:
            assert not (after[key].bool() & ~before[key].bool()).any()
    # body layers lose half of what remains each round, the classifier a quarter (rate / 2)
    layers = result["rounds"][-1]["layers"]
    assert layers["1.weight"] == pytest.approx(0.125, abs=1e-3)
    assert layers["5.weight"] == pytest.approx(0.75**3, abs=1e-2)
    for rec in (result["dense"], *result["rounds"]):
        ticket = rec["ticket"]
        assert [row[0] for row in ticket["curve"]] == [4, 8]
        best = max(row[1] for row in ticket["curve"])
        assert ticket["best_val_acc"] == best
        assert ticket["reach_iter"] == next(r[0] for r in ticket["curve"] if r[1] == best)


def test_late_rewinding_restores_iteration_k_bit_for_bit(loaders, tmp_path: Path) -> None:
    k = 3
    run = _run(loaders, tmp_path / "ck", rewind_iter=k)
    run.prepare()
    run.dense_round()
    rewind = load_file(str(tmp_path / "ck" / "rewind.safetensors"))
    masks = run.start_round(1)
    state = run.model.state_dict()
    for key, mask in masks.items():
        path, _, name = key.rpartition(".")
        effective = getattr(run.model.get_submodule(path), name).detach()
        saved = rewind[f"{path}.parametrizations.{name}.original"]
        assert torch.equal(effective[mask], saved[mask]), key
        assert not effective[~mask].any()
    for key, value in rewind.items():  # biases and the originals too
        assert torch.equal(state[key], value), key
    # the rewind point is the dense run after k steps: a k-step dense run ends there exactly
    short = _run(loaders, iterations=k, eval_every=k)
    short.prepare()
    short.dense_round()
    for key, value in short.model.state_dict().items():
        if key in rewind:
            assert torch.equal(value, rewind[key]), key


def test_lr_rewinding_keeps_trained_weights(loaders) -> None:
    run = _run(loaders, rewind="lr", rewind_iter=2)
    run.prepare()
    run.dense_round()
    trained = {k: v.clone() for k, v in run.model.state_dict().items() if k.endswith("original")}
    masks = run.start_round(1)
    for key, value in trained.items():
        assert torch.equal(run.model.state_dict()[key], value)
    assert all(m.any() and not m.all() for k, m in masks.items() if k != "5.weight")


def test_controls_have_the_tickets_sparsity(loaders) -> None:
    result = _run(loaders, rounds=2, controls=("reinit", "random_mask", "magnitude")).run()
    for rec in result["rounds"]:
        assert set(rec["controls"]) == {"reinit", "random_mask", "magnitude"}
        for name, control in rec["controls"].items():
            assert control["weights_remaining"] == pytest.approx(rec["weights_remaining"]), name
            assert control["layers"] == rec["layers"], name  # layer scope: per layer too
            assert 0.0 <= control["test_acc"] <= 1.0 and control["reach_iter"] in (4, 8)


def test_global_scope_controls_and_random_mask_per_layer(loaders) -> None:
    result = _run(loaders, rounds=1, scope="global", controls=("random_mask", "magnitude")).run()
    rec = result["rounds"][0]
    assert rec["controls"]["random_mask"]["layers"] == rec["layers"]
    assert rec["controls"]["magnitude"]["weights_remaining"] == pytest.approx(
        rec["weights_remaining"]
    )


def test_channel_masks_run_imp(loaders) -> None:
    run = _run(loaders, masks="channel-l2", rounds=2, controls=("random_mask",))
    result = run.run()
    masks = iter_masks(run.model)
    assert masks and any(not bool(m.all()) for m in masks.values())
    for key, mask in masks.items():
        rows = mask.reshape(mask.shape[0], -1)
        assert (rows.all(dim=1) | ~rows.any(dim=1)).all(), key
    layers = result["rounds"][-1]["layers"]
    assert layers["1.weight"] == pytest.approx(75 / 300)  # 300 → 150 → 75 channels
    assert layers["5.weight"] == 1.0  # the classifier's channels are the classes: never pruned
    assert result["rounds"][-1]["controls"]["random_mask"]["layers"] == layers


def test_channel_masks_refuse_to_prune_the_classifier(loaders) -> None:
    with pytest.raises(ConfigError, match="classes"):
        _run(loaders, masks="channel-l1", classifier_rate=0.1)


# --- checkpoints, resume, export ----------------------------------------------------------


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(loaders, tmp_path: Path) -> None:
    settings = {"rounds": 3, "controls": ("random_mask",), "rewind_iter": 2}
    whole = _run(loaders, tmp_path / "whole", **settings)
    expected = whole.run()

    def stop(rec: dict) -> None:
        if rec["round"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        _run(loaders, tmp_path / "cut", on_round=stop, **settings).run()
    assert sorted(p.name for p in (tmp_path / "cut").glob("round_*")) == ["round_00", "round_01"]
    resumed = _run(loaders, tmp_path / "cut", **settings)
    assert resumed.saved == 2
    result = resumed.run()
    assert json.dumps(result["rounds"][-1]["layers"]) == json.dumps(
        expected["rounds"][-1]["layers"]
    )
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for one, two in zip(expected["rounds"], result["rounds"], strict=True):
        assert _timeless(one) == _timeless(two)


def _timeless(rec: dict) -> dict:
    """A round record without wall-clock times, for comparing two runs."""
    rec = json.loads(json.dumps(rec))
    for part in (rec["ticket"], *rec["controls"].values()):
        part.pop("seconds")
    return rec


def test_checkpoint_of_other_model_or_settings_is_refused(loaders, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    _run(loaders, ck, rounds=1).run()
    before = {p: p.stat().st_mtime_ns for p in ck.rglob("*")}
    with pytest.raises(ConfigError, match="config.rate"):
        _run(loaders, ck, rounds=1, rate=0.3)
    train, test = loaders
    with pytest.raises(ConfigError, match="model"):
        LotteryRun(
            netslim.build_model("zoo:lenet5"),
            Lottery(rounds=1, rate=0.5, iterations=ITERS, eval_every=4),
            train,
            test_loader=test,
            checkpoint_dir=ck,
        )
    assert {p: p.stat().st_mtime_ns for p in ck.rglob("*")} == before
    # more rounds on the same search are allowed and continue it
    more = _run(loaders, ck, rounds=2)
    assert more.saved == 2 and len(more.run()["rounds"]) == 2


def test_export_any_round_reloads_with_masks(loaders, tmp_path: Path) -> None:
    run = _run(loaders, tmp_path / "ck", rounds=2)
    result = run.run()
    train, test = loaders
    from netslim.training import evaluate

    last = netslim.load(export_ticket(tmp_path / "ck", tmp_path / "t2"))
    assert evaluate(last, test) == result["rounds"][-1]["ticket"]["test_acc"]
    masks = iter_masks(last)
    assert set(masks) == set(result["masked"])
    assert torch.equal(masks["1.weight"], iter_masks(run.model)["1.weight"])
    first = netslim.load(export_ticket(tmp_path / "ck", tmp_path / "t1", round=1, weights="rewind"))
    kept = float(iter_masks(first)["1.weight"].float().mean())
    assert kept == pytest.approx(result["rounds"][0]["layers"]["1.weight"])
    with pytest.raises(ConfigError, match="round"):
        export_ticket(tmp_path / "ck", tmp_path / "t9", round=9)


# --- CLI ---------------------------------------------------------------------------------

FAST = ["--data", "synthetic", "--limit-train", "160", "--limit-test", "64", "--iterations", "6"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "1.5"], "rate"),
        (["--rate", "0"], "rate"),
        (["--rounds", "0"], "rounds"),
        (["--rewind-iter", "6"], "beyond the training length"),
        (["--rewind", "sideways"], "rewind"),
    ],
)
def test_cli_bad_input(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["lottery", "zoo:lenet300", *FAST, *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("netslim: error:") and "\n" not in err
    assert message in err
    assert not out.exists(), "a refused job must not write anything"


def test_cli_end_to_end_and_resume_refuses_other_model(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lt"
    args = ["lottery", "zoo:lenet300", *FAST, "--rounds", "1", "--rate", "0.5", "--out", str(out)]
    assert main([*args, "--controls", "reinit"]) == 0
    printed = capsys.readouterr().out
    assert "round 1/1" in printed and "reinit" in printed
    result = json.loads((out / "lottery.json").read_text())
    assert result["rounds"][0]["controls"]["reinit"]["weights_remaining"] < 0.6
    assert (out / "lottery.png").stat().st_size > 0
    assert iter_masks(netslim.load(out / "ticket"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code = main(
        ["lottery", "zoo:lenet5", *FAST, "--rounds", "1", "--rate", "0.5", "--out", str(out)]
    )
    assert code == 2 and "another run" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
