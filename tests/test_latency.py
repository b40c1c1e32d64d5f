"""Latency-aware structural pruning: knapsack, staircases, table, allocation (synthetic clocks).

No test here reads the wall clock: op and whole-model times come from deterministic functions
of the shapes, with staircases of 8 channels like a vectorised kernel."""

from __future__ import annotations

import copy
import itertools
import math
import random
import sys
import warnings
from dataclasses import replace

import pytest
import torch
from pruned import param_count
from torch import nn

import netslim
from netslim.core.blocks import find_blocks
from netslim.errors import ConfigError, NetslimWarning
from netslim.structural import op_timing
from netslim.structural.config import Channels
from netslim.structural.engine import candidates, pruned_copies
from netslim.structural.groups import analyze
from netslim.structural.knapsack import fast_end, mckp, staircase_steps
from netslim.structural.latency_alloc import floor_note
from netslim.structural.latency_blocks import (
    BLOCK_WEIGHT,
    BlockOption,
    BypassedBlock,
    block_options,
    block_weights,
    bypass,
    removable_blocks,
)
from netslim.structural.latency_fit import fit_block_fixed, fit_inside
from netslim.structural.latency_knapsack import allocate, allocate_reaching, value_curve
from netslim.structural.latency_measure import build_table
from netslim.structural.latency_table import (
    Dim,
    LatencyTable,
    Layer,
    grid,
    inside_factor,
    lookup,
)
from netslim.structural.op_timing import OpShape, Target


def _brute(values, costs, budget):
    best = None
    for pick in itertools.product(*[range(len(v)) for v in values]):
        c = sum(costs[i][j] for i, j in enumerate(pick))
        if c <= budget:
            v = sum(values[i][j] for i, j in enumerate(pick))
            if best is None or v > best:
                best = v
    return best


@pytest.mark.parametrize("seed", range(30))
def test_knapsack_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 4)
    values = [[rng.randint(0, 20) for _ in range(rng.randint(1, 4))] for _ in range(n)]
    costs = [[rng.randint(0, 12) for _ in v] for v in values]
    budget = rng.randint(0, 30)
    picks = mckp(values, costs, budget, unit=1.0)
    best = _brute(values, costs, budget)
    if best is None:
        assert picks is None
        return
    assert picks is not None
    assert sum(costs[i][j] for i, j in enumerate(picks)) <= budget
    assert sum(values[i][j] for i, j in enumerate(picks)) == best


def test_knapsack_float_costs_always_fit() -> None:
    rng = random.Random(0)
    for _ in range(50):
        values = [[rng.random() for _ in range(5)] for _ in range(6)]
        costs = [[rng.random() * 3 for _ in range(5)] for _ in range(6)]
        budget = sum(min(c) for c in costs) + rng.random() * 4
        picks = mckp(values, costs, budget, bins=200)
        assert picks is not None
        assert sum(costs[i][j] for i, j in enumerate(picks)) <= budget + 1e-9
        # within one cost step per item of the exact optimum
        step = (budget - sum(min(c) for c in costs)) / 200
        exact = _brute(values, costs, budget - len(costs) * step)
        if exact is not None:
            assert sum(values[i][j] for i, j in enumerate(picks)) >= exact - 1e-9


def _stairs(w: int, period: int = 8) -> float:
    return 1.0 + math.ceil(w / period)


def test_fast_end_of_synthetic_staircases() -> None:
    widths = list(range(1, 41))
    costs = [_stairs(w) for w in widths]
    ends = [widths[i] for i in fast_end(widths, costs)]
    assert ends == [8, 16, 24, 32, 40]
    assert staircase_steps(widths, costs) == [9, 17, 25, 33]
    # noise inside a step: a tolerance keeps the step's right end only
    noisy = [c * (1 + 0.01 * ((w * 7) % 3 - 1)) for w, c in zip(widths, costs, strict=True)]
    assert [widths[i] for i in fast_end(widths, noisy, tol=0.03)] == [8, 16, 24, 32, 40]
    # a cliff (width 12 slower than 16): 12 is dominated, never offered
    cliff = {**dict(zip(widths, costs, strict=True)), 12: 9.0}
    ends = [widths[i] for i in fast_end(widths, [cliff[w] for w in widths])]
    assert 12 not in ends and 16 in ends


def test_timings_span_a_minimum_time(monkeypatch) -> None:
    """Whole-model timings keep sampling until their samples span ``min_total_s``, so a short
    slowdown cannot cover them all (a fake clock: each call takes 10 ms)."""
    now = [0.0]
    calls = []

    def call() -> None:
        now[0] += 0.01 if len(calls) != 5 else 0.05  # one slow call among the samples
        calls.append(now[0])

    monkeypatch.setattr(op_timing.time, "perf_counter", lambda: now[0])
    assert op_timing.median_ms(call, samples=3) == pytest.approx(10.0)
    assert len(calls) == 2 + 1 + 3  # two warm-ups, one to size the batches, the samples
    calls.clear()
    assert op_timing.median_ms(call, samples=3, min_total_s=0.2) == pytest.approx(10.0)
    assert len(calls) == 2 + 1 + 16  # 15 samples of 10 ms and the slow one: 0.2 s


class _Clocked(nn.Module):
    """A model whose forward advances a fake clock by ``cost`` times the machine's current
    slowness (``state["slow"]``, moved by the test between calls)."""

    def __init__(self, cost: float, clock: list[float], state: dict[str, float]):
        super().__init__()
        self.cost, self.clock, self.state = cost, clock, state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state["calls"] += 1
        if self.state["toggle"] and self.state["calls"] % 20 == 0:  # speed moves every 20 calls
            self.state["slow"] = 1.0 + 0.5 * ((self.state["calls"] // 20) % 2)
        self.state["slow"] += self.state.get("ramp", 0.0)  # or slows down call by call
        self.clock[0] += self.cost * self.state["slow"]
        return x


def test_paired_ratio_holds_while_the_machine_speed_moves(monkeypatch) -> None:
    """Two models timed separately while the machine slows down between them give a wrong
    ratio; timed paired (alternating call by call) they give their true one."""
    clock = [0.0]
    state = {"slow": 1.0, "calls": 0, "toggle": True}
    monkeypatch.setattr(op_timing.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(op_timing, "PAIRED_S", 0.5)
    a, b, x = _Clocked(0.002, clock, state), _Clocked(0.004, clock, state), torch.zeros(1)
    assert op_timing.time_ratio(a, b, (x,), Target()) == pytest.approx(0.5)
    assert op_timing.time_ratio(b, a, (x,), Target()) == pytest.approx(2.0)
    state.update(toggle=False, slow=1.5)  # separately, with the machine slower for the first
    a_ms = op_timing.model_ms(a, (x,), Target())
    state["slow"] = 1.0
    assert a_ms / op_timing.model_ms(b, (x,), Target()) == pytest.approx(0.75)


def test_onnxruntime_exports_a_reference_once_per_shape(monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    exported = []
    real = op_timing._onnx_runner
    monkeypatch.setattr(op_timing, "_prepared_runs", [])

    def _onnx_runner(m, x, t):
        exported.append(m)
        return real(m, x, t)

    monkeypatch.setattr(op_timing, "_onnx_runner", _onnx_runner)
    ref, x, target = nn.Sequential(nn.Linear(64, 512)), (torch.randn(4, 64),), Target("onnxruntime")
    for width in (8, 16):
        op_timing.time_ratio(nn.Linear(64, width), ref, x, target)
    assert sum(m is ref for m in exported) == 1  # the dense reference: exported once
    ref[0] = nn.Linear(64, 256)  # pruned in place: new shapes, exported again
    op_timing.time_ratio(nn.Linear(64, 8), ref, x, target)
    assert sum(m is ref for m in exported) == 2 and len(exported) == 5


def test_paired_ratio_cancels_a_steady_slowdown(monkeypatch) -> None:
    """A machine slowing down call by call: every round's palindrome (cheaper, costlier,
    cheaper) cancels it exactly, where plain alternation would not."""
    clock = [0.0]
    state = {"slow": 1.0, "calls": 0, "toggle": False, "ramp": 0.01}
    monkeypatch.setattr(op_timing.time, "perf_counter", lambda: clock[0])
    a, b, x = _Clocked(0.002, clock, state), _Clocked(0.004, clock, state), torch.zeros(1)
    assert op_timing.time_ratio(a, b, (x,), Target()) == pytest.approx(0.5)
    pair = []
    for model in (a, b):  # plain alternation: the reference always runs slower
        start = clock[0]
        model(x)
        pair.append(clock[0] - start)
    assert pair[0] / pair[1] < 0.499


def test_paired_ratio_runs_the_costlier_model_once_a_round(monkeypatch) -> None:
    """A plan check times a pruned copy against its dense model, several times slower: the
    dense model runs once a round, between the copy's two calls, whichever is passed first."""
    clock = [0.0]
    monkeypatch.setattr(op_timing.time, "perf_counter", lambda: clock[0])
    for cheap_first in (True, False):
        state = {"slow": 1.0, "calls": 0, "toggle": False}
        cheap, costly, x = (
            _Clocked(0.001, clock, state),
            _Clocked(0.003, clock, state),
            torch.zeros(1),
        )
        order: list[str] = []
        cheap.register_forward_hook(lambda *_, o=order: o.append("cheap"))
        costly.register_forward_hook(lambda *_, o=order: o.append("costly"))
        pair = (cheap, costly) if cheap_first else (costly, cheap)
        ratio = op_timing.time_ratio(*pair, (x,), Target())
        assert ratio == pytest.approx(1 / 3 if cheap_first else 3.0)
        rounds = order[2:]  # after one warm-up call each
        assert len(rounds) >= 3 * op_timing.MIN_ROUNDS
        assert rounds[:3] == ["cheap", "costly", "cheap"]
        assert rounds.count("cheap") == 2 * rounds.count("costly")


def test_paired_ratio_on_onnxruntime() -> None:
    pytest.importorskip("onnxruntime")
    small, big = nn.Linear(64, 8), nn.Linear(64, 512)
    ratio = op_timing.time_ratio(small, big, (torch.randn(4, 64),), Target("onnxruntime"))
    assert math.isfinite(ratio) and ratio > 0


def test_layer_width_is_affine_in_the_kept_counts() -> None:
    """A layer width is ``fixed + sum(mult * kept)``, rounded, at least 1, a group missing
    from ``kept`` counting whole; the one-group case has its own fast path and must agree."""
    sizes = {"a": 64, "b": 32}
    cases = [
        (Dim(64, 0, {"a": 1}), {"a": 40}, 40),  # one group sets it (the fast path)
        (Dim(64, 0, {"a": 1}), {}, 64),  # missing: whole
        (Dim(64, 0, {"a": 1}), {"a": 0}, 1),  # never below one
        (Dim(128, 0, {"a": 2}), {"a": 10}, 20),  # a multiple (a flattened or repeated dim)
        (Dim(96, 16, {"a": 1}), {"a": 10}, 26),  # fixed channels beside the group
        (Dim(96, 0, {"a": 1, "b": 1}), {"a": 10, "b": 5}, 15),  # concatenated groups
        (Dim(32, 0, {"a": 0.5}), {"a": 7}, 4),  # rounded
    ]
    for dim, kept, width in cases:
        assert dim.width(kept, sizes) == width, (dim, kept)


def test_grid_and_lookup() -> None:
    assert grid(16) == list(range(1, 17))
    g = grid(2048)
    assert g[0] == 64 and g[-1] == 2048 and len(g) == 32 and all(w % 64 == 0 for w in g)
    assert grid(100, multiple=4)[-1] == 100
    assert all(w % 4 == 0 for w in grid(100, multiple=4))
    line = {8: 1.0, 16: 2.0, 24: 3.0}
    assert lookup(line, 9) == 2.0 and lookup(line, 16) == 2.0 and lookup(line, 99) == 3.0


# --- a synthetic target: 8-wide staircases in both widths, a per-op overhead ---------------


def fake_op_ms(op: OpShape) -> float:
    space = math.prod(op.spatial) * math.prod(op.kernel or (1,))
    cin = op.cin // op.groups
    return 0.01 + 1e-6 * space * op.batch * 8 * math.ceil(cin / 8) * 8 * math.ceil(op.cout / 8)


def fake_layer_ops(model: nn.Module, inputs, target: Target) -> list[tuple[str, OpShape]]:
    """The model's conv / linear calls as they are, each with its op shape."""
    from netslim.structural.latency_measure import _record_calls

    ops = []
    for c in _record_calls(model, inputs):
        m, ishape = c.module, c.ishape
        if c.features is not None:
            op = OpShape("linear", *c.features, target.batch, ishape[1:-1])
        else:
            op = OpShape(
                "conv", m.in_channels, m.out_channels, target.batch, ishape[2:], m.kernel_size,
                m.stride, m.padding, m.dilation, m.groups,
            )  # fmt: skip
        ops.append((c.name, op))
    return ops


def fake_model_ms(model: nn.Module, inputs, target: Target, inside=fake_op_ms) -> float:
    """Sum of ``fake_op_ms`` (or ``inside``: a layer's time in the model) over the model's
    layers as they are, plus 0.05 ms per norm."""
    total = sum(inside(op) for _, op in fake_layer_ops(model, inputs, target))
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    return total + 0.05 * norms


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 48, 3, padding=1), nn.BatchNorm2d(48)
        self.dw = nn.Conv2d(48, 48, 3, padding=1, groups=48)
        self.c3 = nn.Conv2d(48, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = self.c3(torch.relu(self.dw(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def fake_clock(monkeypatch, tmp_path):
    calls = {"ops": 0}

    def timer(target):
        def t(op):
            calls["ops"] += 1
            return fake_op_ms(op)

        return t

    monkeypatch.setenv("NETSLIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(op_timing, "usable_cores", lambda: 64)  # a fake clock has any threads
    monkeypatch.setattr(op_timing, "op_timer", timer)
    monkeypatch.setattr(op_timing, "model_ms", fake_model_ms)
    monkeypatch.setattr(op_timing, "time_ratio", fake_time_ratio)
    monkeypatch.setattr(op_timing, "model_faults", lambda model, inputs, target: calls["faults"])
    monkeypatch.setattr(op_timing, "layer_ms_inside", lambda model, inputs, target: {})
    calls["dir"] = tmp_path
    calls["faults"] = 0
    return calls


def fake_time_ratio(model: nn.Module, reference: nn.Module, inputs, target: Target) -> float:
    return fake_model_ms(model, inputs, target) / fake_model_ms(reference, inputs, target)


def _table(model, x, target=None):
    analysis = analyze(model, x)
    groups = candidates(analysis, Channels())
    table = build_table(
        model, x, analysis, groups, target or Target(), pruned_copy=pruned_copies(model, x)
    )
    return analysis, groups, table


def test_table_predicts_the_synthetic_target(fake_clock) -> None:
    torch.manual_seed(0)
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    _, groups, table = _table(model, x)
    assert {la.name for la in table.layers} == {"c1", "c2", "dw", "c3", "fc"}
    dw = next(la for la in table.layers if la.name == "dw")
    assert dw.depthwise and dw.cin is dw.cout
    assert abs(table.predict() - fake_model_ms(model, x, Target())) < 1e-9
    rng = random.Random(0)
    for _ in range(5):  # arbitrary kept widths: the prediction follows the pruned model
        kept = {g.id: rng.choice(grid(g.size)) for g in groups}
        pruned = _prune_to(model, x, kept)
        measured = fake_model_ms(pruned, x, Target())
        assert abs(table.predict(kept) - measured) / measured < 0.01
    # the cache: a second build measures nothing
    before = fake_clock["ops"]
    _, _, again = _table(model, x)
    assert fake_clock["ops"] == before and again.measured_points == 0
    assert again.predict() == table.predict()


def test_inside_factor_is_linear_between_the_points_and_flat_outside() -> None:
    points = ((1.0, 1.6), (4.0, 1.3), (10.0, 1.0))
    assert inside_factor(points, 0.5) == 1.6 and inside_factor(points, 20.0) == 1.0
    assert inside_factor(points, 2.5) == pytest.approx(1.45)
    assert inside_factor(points, 7.0) == pytest.approx(1.15)


def test_layers_are_timed_inside_the_model_once_a_forward_each() -> None:
    """``layer_ms_inside`` times every conv / linear the forward calls once, by module name; a
    module called twice has no one time to give, and ONNX Runtime runs the graph whole."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.shared, self.fc = (
                nn.Conv2d(3, 8, 3),
                nn.Conv2d(8, 8, 1),
                nn.Linear(8, 2),
            )

        def forward(self, x):
            return self.fc(self.shared(self.shared(self.conv(x))).mean((2, 3)))

    model, x = Twice().eval(), (torch.randn(1, 3, 16, 16),)
    times = op_timing.layer_ms_inside(model, x, Target())
    assert set(times) == {"conv", "fc"} and all(ms > 0 for ms in times.values())
    assert not model._forward_hooks and not model.conv._forward_hooks  # hooks removed
    assert op_timing.layer_ms_inside(model, x, Target("onnxruntime")) == {}


def test_a_layer_no_point_narrows_takes_the_mean_of_its_factors() -> None:
    """A layer whose widths no calibration point changes has one isolated time and three
    in-model timings of it: its factor is their mean, not the last one read. A layer with no
    in-model timing (a module called twice a forward: two table layers) keeps its isolated
    time."""
    fixed = Layer("head", None, Dim(8, 8), Dim(10, 10), False, 1, full_ms=2.0)
    narrowed = Layer(
        "body", None, Dim(3, 3), Dim(64, 0, {"g": 1.0}), False, 1,
        out_line={w: 4.0 * w / 64 for w in grid(64)}, full_ms=4.0,
    )  # fmt: skip
    untimed = Layer("shared", None, Dim(8, 8), Dim(8, 8), False, 1, full_ms=1.0)
    table = LatencyTable(Target(), [fixed, narrowed, untimed, untimed], {"g": 64})
    points = {"dense": {}, "half": {"g": 32}, "small": {"g": 8}}
    inside = {
        "dense": {"head": 2.2, "body": 4.4},
        "half": {"head": 2.4, "body": 2.4},
        "small": {"head": 3.2, "body": 0.75},
    }
    fit_inside(table, inside, points)
    assert untimed.inside == () and untimed.time(8, 8) == 1.0  # no in-model time: alone
    assert fixed.inside == (pytest.approx((2.0, 1.3)),)
    assert fixed.time(8, 10) == pytest.approx(2.6)
    assert [x for x, _ in narrowed.inside] == [0.5, 2.0, 4.0]
    assert [f for _, f in narrowed.inside] == pytest.approx([1.5, 1.2, 1.1])
    assert narrowed.time(3, 48) == pytest.approx(3.0 * 1.15)  # between half and dense


def cold_weights_ms(op: OpShape) -> float:
    """A layer's time inside a model: ``fake_op_ms`` plus the fetch of its weights, cold after
    the layers before it (in proportion to the weights, not to the work: a 1x1 conv on a large
    map and a 3x3 conv on a small one part differently from what they do alone)."""
    return fake_op_ms(op) + 2e-5 * (op.cin // op.groups) * op.cout * math.prod(op.kernel or (1,))


def test_the_table_predicts_layers_as_they_run_inside_the_model(fake_clock, monkeypatch) -> None:
    """Layers run slower inside the model than alone, by more than one scale on their isolated
    time can say (cold weights). Timed inside the calibration copies (``layer_ms_inside``),
    each layer's factor follows its width and the table predicts non-uniform widths within
    3%; the scale fitted on the calibration points alone misses them by more."""

    def whole(model, inputs, target):
        return fake_model_ms(model, inputs, target, cold_weights_ms)

    monkeypatch.setattr(op_timing, "model_ms", whole)
    monkeypatch.setattr(op_timing, "time_ratio", lambda m, r, i, t: whole(m, i, t) / whole(r, i, t))
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(1, 1, 28, 28),)
    rng = random.Random(0)
    misses = {}
    for timed_inside in (False, True):
        monkeypatch.setattr(
            op_timing, "layer_ms_inside",
            lambda m, i, t, on=timed_inside: (
                {n: cold_weights_ms(op) for n, op in fake_layer_ops(m, i, t)} if on else {}
            ),
        )  # fmt: skip
        monkeypatch.setenv("NETSLIM_CACHE_DIR", str(fake_clock["dir"] / str(timed_inside)))
        _, groups, table = _table(model, x)
        assert all(la.inside for la in table.layers) == timed_inside
        misses[timed_inside] = []
        for _ in range(6):
            kept = {g.id: rng.choice(grid(g.size)) for g in groups}
            measured = whole(_prune_to(model, x, kept), x, Target())
            misses[timed_inside].append(abs(table.predict(kept) / measured - 1))
    assert max(misses[True]) < 0.03 < max(misses[False])  # 2.5% against 6.9% here


class Attention(nn.Module):
    """An embedding, a transformer block on 64-wide tokens (nn.MultiheadAttention and an MLP)
    and a head: the residual stream is a group."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(32, 64)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.up, self.down = nn.Linear(64, 128), nn.Linear(128, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.head(x + self.down(torch.relu(self.up(x))))


def test_attention_projections_are_layers_of_the_table(fake_clock) -> None:
    """nn.MultiheadAttention runs its projections functionally: the table times them as
    linears whose widths follow the groups (before, their time was left to the remainder fit,
    and ViT-B/16's first plans ran in half their predicted time)."""
    torch.manual_seed(0)
    model, x = Attention().eval(), (torch.randn(2, 10, 32),)
    _, groups, table = _table(model, x, Target(batch=2))
    names = {la.name for la in table.layers}
    assert {"attn.in_proj", "attn.out_proj", "up", "down"} <= names
    in_proj = next(la for la in table.layers if la.name == "attn.in_proj")
    assert (in_proj.op.cin, in_proj.op.cout, in_proj.op.spatial) == (64, 192, (10,))
    assert in_proj.cin.terms and in_proj.cout.terms  # the residual group sets both
    assert table.predict() == pytest.approx(fake_model_ms(model, x, Target(batch=2)), rel=1e-9)
    rng = random.Random(0)
    for _ in range(3):  # the prediction follows the pruned model, projections included
        kept = {g.id: rng.choice(grid(g.size)) for g in groups}
        pruned = _prune_to(model, x, kept)
        measured = fake_model_ms(pruned, x, Target(batch=2))
        assert abs(table.predict(kept) - measured) / measured < 0.01


def _prune_to(model, x, kept):

    return pruned_copies(model, x)(kept)


def test_allocation_fits_budget_on_fast_ends(fake_clock) -> None:
    torch.manual_seed(0)
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    _, groups, table = _table(model, x)
    gen = torch.Generator().manual_seed(0)
    values = {g.id: value_curve(torch.rand(g.size, generator=gen)) for g in groups}
    for frac in (0.8, 0.5, 0.35):
        budget = table.predict() * frac
        alloc = allocate(table, values, budget)
        assert alloc.predicted_ms <= budget + 1e-9
        assert abs(alloc.predicted_ms - table.predict(alloc.counts)) < 1e-9
        for g in groups:  # a width inside an 8-step would cost the same as the step's end
            n = alloc.counts[g.id]
            assert n % 8 == 0 or n == g.size, (g.id, n)
        # no uniform choice of fast ends under the budget keeps more value
        for w in (8, 16, 24, 32, 40, 48):
            kept = {g.id: min(g.size, w) for g in groups}
            if table.predict(kept) <= budget:
                uniform = sum(float(values[g][kept[g] - 1]) for g in values)
                assert alloc.value >= uniform - 1e-9


def test_allocation_matches_exhaustive_search_on_two_groups(fake_clock) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU())
    model.append(nn.Conv2d(16, 4, 1))
    x = (torch.randn(1, 3, 10, 10),)
    _, groups, table = _table(model.eval(), x)
    assert len(groups) == 2
    gen = torch.Generator().manual_seed(1)
    values = {g.id: value_curve(torch.rand(g.size, generator=gen)) for g in groups}
    budget = table.predict() * 0.55
    a, b = groups
    for fraction in (0.0, 0.25):
        alloc = allocate(table, values, budget, min_fraction=fraction)
        low = max(1, math.ceil(16 * fraction))
        best = max(
            float(values[a.id][i - 1] + values[b.id][j - 1])
            for i in range(low, 17)
            for j in range(low, 17)
            if table.predict({a.id: i, b.id: j}) <= budget
        )
        assert alloc.value == pytest.approx(best)
        assert min(alloc.counts.values()) >= low


def _chain_table(rng: random.Random, groups: int, size: int = 16) -> LatencyTable:
    """A chain of layers, each group the output of one and the input of the next, with random
    full times, per-call overheads and staircases (steps of 1, 2 or 4 channels)."""
    sizes = {f"g{i}": size for i in range(groups)}
    layers = []
    for i in range(groups + 1):
        full = rng.uniform(0.5, 5.0)
        overhead = rng.uniform(0.0, 0.3) * full
        step = rng.choice([1, 2, 4])
        line = {w: overhead + (full - overhead) * -(-w // step) * step / size for w in grid(size)}
        layers.append(
            Layer(
                f"l{i}", None,
                Dim(size, 0, {f"g{i - 1}": 1.0}) if i else Dim(3, 3),
                Dim(size, 0, {f"g{i}": 1.0}) if i < groups else Dim(10, 10),
                False, 1,
                in_line=dict(line) if i else {}, out_line=dict(line) if i < groups else {},
                full_ms=full, overhead=overhead,
            )
        )  # fmt: skip
    return LatencyTable(Target(), layers, sizes, remainder_fixed=0.1)


def test_allocation_is_near_the_exhaustive_optimum_on_coupled_staircases() -> None:
    """Each layer's time depends on the widths on both sides, through staircases: the
    knapsack on linearised costs, refined in rounds, kept 0.89 of the best value in one of
    these cases and under 0.98 in four (before 2026-12-02)."""
    ratios = []
    for seed in range(100):
        rng = random.Random(seed)
        table = _chain_table(rng, rng.choice([2, 3]))
        gen = torch.Generator().manual_seed(seed)
        skew = rng.choice([1, 3, 6])
        values = {
            g: value_curve(torch.rand(n, generator=gen) ** skew * rng.uniform(0.2, 3))
            for g, n in table.sizes.items()
        }
        widths = {g: list(range(4, n + 1)) for g, n in table.sizes.items()}  # floor: a quarter
        budget = table.predict() * rng.uniform(0.25, 0.8)
        feasible = [
            sum(float(values[g][w - 1]) for g, w in zip(widths, pick, strict=True))
            for pick in itertools.product(*widths.values())
            if table.predict(dict(zip(widths, pick, strict=True))) <= budget
        ]
        if not feasible:
            continue
        alloc = allocate(table, values, budget)
        assert alloc.predicted_ms <= budget + 1e-9
        ratios.append(alloc.value / max(feasible))
    assert len(ratios) > 80
    assert min(ratios) >= 0.975
    assert sum(ratios) / len(ratios) >= 0.999


def _residual_table(rng: random.Random, blocks: int, size: int = 8):
    """A residual stream ``s`` through a stem, ``blocks`` blocks (each a layer into its own
    group ``b{i}`` and one back to the stream) and a head; random times with overheads, a
    remainder that scales with activations, and each block's fixed non-layer time."""

    def layer(name, cin, cout, full):
        overhead = rng.uniform(0.1, 0.6) * full  # per-op time no width removes
        line = {w: overhead + (full - overhead) * w / size for w in grid(size)}
        return Layer(
            name, None, cin, cout, False, rng.choice([1, 4]),
            in_line=dict(line) if cin.terms else {}, out_line=dict(line) if cout.terms else {},
            full_ms=full, overhead=overhead,
        )  # fmt: skip

    s = {"s": 1.0}
    layers = [layer("stem", Dim(3, 3), Dim(size, 0, s), rng.uniform(0.5, 2))]
    options = []
    for i in range(blocks):
        inner = {f"b{i}": 1.0}
        layers.append(layer(f"b{i}.a", Dim(size, 0, s), Dim(size, 0, inner), rng.uniform(0.5, 3)))
        layers.append(layer(f"b{i}.b", Dim(size, 0, inner), Dim(size, 0, s), rng.uniform(0.5, 3)))
        ends = (len(layers) - 2, len(layers) - 1)
        weight = rng.choice([1.0, 0.5, 0.1])
        options.append(BlockOption(f"b{i}", ends, (f"b{i}",), rng.uniform(0, 1), weight))
    layers.append(layer("head", Dim(size, 0, s), Dim(10, 10), rng.uniform(0.5, 2)))
    sizes = {"s": size, **{f"b{i}": size for i in range(blocks)}}
    table = LatencyTable(
        Target(), layers, sizes, scale=rng.uniform(0.8, 1.2), remainder_fixed=2.0,
        remainder_var=rng.uniform(0.0, 1.0),
        act_total=sum(la.cout.full * la.out_numel for la in layers),
    )  # fmt: skip
    return table, tuple(options)


def _predict_without(table: LatencyTable, counts: dict[str, int], gone, options) -> float:
    """The table's prediction with the blocks ``gone`` removed: their layers' scaled time and
    activations and their fixed time taken off (written apart from the solver's bookkeeping)."""
    ms = table.predict(counts)
    per_act = table.remainder_var / table.act_total
    for b in options:
        if b.name in gone:
            ms -= b.fixed_ms
            for i in b.layers:
                la = table.layers[i]
                ms -= table.scale * la.time_at(counts, table.sizes)
                ms -= per_act * la.cout.width(counts, table.sizes) * la.out_numel
    return ms


def _value_without(values, counts, gone, options) -> float:
    """Kept value with the blocks ``gone`` removed: each keeps ``1 - weight`` of its group's
    whole value, whatever width it had."""
    value = sum(float(values[g][w - 1]) for g, w in counts.items() if g not in gone)
    return value + sum(
        (1 - b.weight) * float(values[b.name][-1]) for b in options if b.name in gone
    )


def test_blocks_and_widths_are_near_the_exhaustive_optimum() -> None:
    """Removing whole blocks is one more choice of the same knapsack: a removed block loses
    ``weight`` of its group's whole value and saves its layers' time and its fixed time.
    Against every width of every group and every set of removed blocks, on random residual
    chains."""
    ratios, removed, plans = [], 0, 0
    for seed in range(60):
        rng = random.Random(seed)
        table, options = _residual_table(rng, rng.choice([2, 3]))
        gen = torch.Generator().manual_seed(seed)
        values = {
            g: value_curve(torch.rand(n, generator=gen) * rng.uniform(0.05, 3))
            for g, n in table.sizes.items()
        }
        widths = {g: list(range(2, n + 1)) for g, n in table.sizes.items()}  # floor: a quarter
        budget = table.predict() * rng.uniform(0.3, 0.8)
        best = -1.0
        for gone in itertools.product([False, True], repeat=len(options)):
            out = {b.name for b, g in zip(options, gone, strict=True) if g}
            for pick in itertools.product(*widths.values()):
                counts = dict(zip(widths, pick, strict=True))
                if any(counts[b] != table.sizes[b] for b in out):
                    continue  # a removed block's width does not matter: count it once
                if _predict_without(table, counts, out, options) <= budget:
                    best = max(best, _value_without(values, counts, out, options))
        if best < 0:
            continue
        alloc = allocate(table, values, budget, blocks=options)
        exact = _predict_without(table, alloc.counts, set(alloc.removed), options)
        assert alloc.predicted_ms == pytest.approx(exact)
        assert exact <= budget * (1 + 1e-9)
        assert all(alloc.counts[b] == table.sizes[b] for b in alloc.removed)  # whole when out
        kept = _value_without(values, alloc.counts, set(alloc.removed), options)
        assert alloc.value == pytest.approx(kept)
        ratios.append(alloc.value / best)
        removed += len(alloc.removed)
        plans += 1
    assert plans > 40
    assert removed > 0  # the cases include budgets only removing a block meets well
    assert min(ratios) >= 0.9  # 0.93 at worst (2026-12-03): a greedy refill after a swap
    assert sum(ratios) / len(ratios) >= 0.995


def test_blocks_whose_groups_are_fixed_are_never_removed() -> None:
    """A fixed group's width was decided elsewhere (``per_module``): its block stays, and the
    plan is the plan without block options; with the groups free, the same budget removes one."""
    rng = random.Random(3)
    table, options = _residual_table(rng, 3)
    options = tuple(replace(b, weight=0.0) for b in options)  # removing one loses nothing
    values = {g: value_curve(torch.rand(n)) for g, n in table.sizes.items()}
    budget = table.predict() * 0.5
    fixed = {b.groups[0]: 4 for b in options}
    held = allocate(table, values, budget, blocks=options, fixed=fixed)
    plain = allocate(table, values, budget, fixed=fixed)
    assert held.removed == [] and held.counts == plain.counts
    assert held.predicted_ms == pytest.approx(plain.predicted_ms)
    assert allocate(table, values, budget, blocks=options).removed


def test_a_tight_budget_keeps_the_floor_of_every_group(fake_clock) -> None:
    torch.manual_seed(0)
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    _, groups, table = _table(model, x)
    values = {g.id: value_curve(torch.ones(g.size)) for g in groups}
    budget = table.predict() * 0.05
    floored = allocate(table, values, budget)
    assert all(floored.counts[g.id] >= math.ceil(0.25 * g.size) for g in groups)
    unfloored = allocate(table, values, budget, min_fraction=0.0)
    assert min(unfloored.counts[g.id] / g.size for g in groups) < 0.25


def test_a_target_below_the_floor_lowers_it_and_says_so(fake_clock) -> None:
    torch.manual_seed(0)
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    _, groups, table = _table(model, x)
    values = {g.id: value_curve(torch.ones(g.size)) for g in groups}
    at_floor = {g.id: math.ceil(0.25 * g.size) for g in groups}
    budget = table.predict(at_floor) * 0.8  # every group at a quarter is too slow
    assert allocate(table, values, budget).note  # the default floor cannot reach it
    alloc = allocate_reaching(table, values, budget)
    assert alloc.note is None and alloc.predicted_ms <= budget
    assert alloc.min_fraction < 0.25
    assert min(alloc.counts[g.id] / g.size for g in groups) < 0.25
    assert "floor was lowered to 1/" in floor_note(alloc)
    reachable = allocate_reaching(table, values, table.predict() * 0.6)
    assert reachable.min_fraction == 0.25 and floor_note(reachable) is None
    at_last = {g.id: math.ceil(g.size / 16) for g in groups}
    hopeless = allocate_reaching(table, values, table.predict(at_last) * 0.5)
    assert hopeless.min_fraction == 0.25 and floor_note(hopeless) is None  # not taken down
    assert hopeless.counts == allocate(table, values, table.predict(at_last) * 0.5).counts
    assert "unreachable" in hopeless.note and "1/16" in hopeless.note
    budget = table.predict(at_last) * 0.9  # reachable as the table says, not twice as slow
    corrected = allocate_reaching(table, values, budget, correction=2.0)
    assert corrected.counts == allocate(table, values, budget / 2).counts
    assert f"predict {2 * corrected.predicted_ms:.3f} ms for a {budget:.3f} ms budget" in (
        corrected.note
    )  # the user's budget against the corrected prediction


def test_channels_time_target_through_prune_and_reload(fake_clock, tmp_path) -> None:
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:lenet300").eval(), (torch.randn(4, 1, 28, 28),)
    dense = fake_model_ms(model, x, Target(batch=4))
    untouched = copy.deepcopy(model)
    report = netslim.prune_(untouched, Channels(target_latency_ms=dense * 2), example_inputs=x)
    assert "nothing pruned" in report["latency"]["note"]
    assert [p.shape for p in untouched.parameters()] == [p.shape for p in model.parameters()]
    report = netslim.prune_(model, Channels(target_speedup=2.0), example_inputs=x)
    assert param_count(model) == report["params"]["after"] < param_count(untouched)
    assert fake_model_ms(model, x, Target(batch=4)) <= dense / 2 + 1e-9  # the model itself
    info = report["latency"]
    assert info["predicted_ms"] <= dense / 2 + 1e-9
    assert info["measured_ms"] == pytest.approx(info["predicted_ms"], rel=0.01)
    assert info["measured_speedup"] >= 1.98
    last = info["checks"][-1]  # the report's measurement is the check of the plan returned
    assert (last["predicted_ms"], last["measured_ms"]) == (
        info["predicted_ms"],
        info["measured_ms"],
    )
    assert info["min_keep_fraction"] == 0.25 and "note" not in info
    netslim.save(model, tmp_path / "m")
    reloaded = netslim.load(tmp_path / "m")
    assert torch.equal(reloaded(*x), model(*x))


@pytest.mark.parametrize("factor", [0.7, 1.5, 2.5])
def test_a_plan_checked_off_its_prediction_is_solved_again_onto_the_target(
    fake_clock, monkeypatch, factor
) -> None:
    """Pruned models run 0.7-2.5x what the table's calibration points say (an in-model effect
    they miss): the first plan's check misses, the knapsack is solved again for the budget
    corrected by that miss, and the plan returned reaches the target, its prediction agreeing
    with its own check. (Refitting the table on the check instead missed all three.)"""
    _checks_scaled(monkeypatch, lambda measure, kept: factor * measure(kept))
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    dense = fake_model_ms(model, x, Target(batch=2))
    info = netslim.prune_(model, Channels(target_speedup=2.0), example_inputs=x)["latency"]
    first, last = info["checks"][0], info["checks"][-1]
    assert abs(first["measured_ms"] / (dense / 2) - 1) > 0.25  # the first plan missed
    assert info["checks"][1]["correction"] == pytest.approx(
        first["measured_ms"] / first["predicted_ms"]
    )
    assert last["measured_ms"] == pytest.approx(dense / 2, rel=0.05)  # the bench's 5%
    assert last["measured_ms"] == pytest.approx(last["predicted_ms"], rel=0.05)
    assert info["predicted_ms"] == last["predicted_ms"]


def test_a_check_that_reached_the_target_is_kept_off_its_prediction(
    fake_clock, monkeypatch
) -> None:
    """Every pruned model measures 4% over the budget: more than 5% off the first plan's
    prediction (which the grid leaves 2% under the budget), but the target is reached within
    5%: the plan is kept after one check, not re-solved after one timing's miss."""
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:lenet300").eval(), (torch.randn(4, 1, 28, 28),)
    budget = fake_model_ms(model, x, Target(batch=4)) / 2
    _checks_scaled(monkeypatch, lambda measure, kept: 1.04 * budget)
    info = netslim.prune_(model, Channels(target_speedup=2.0), example_inputs=x)["latency"]
    (check,) = info["checks"]
    assert check["measured_ms"] / check["predicted_ms"] > 1.05
    assert info["measured_ms"] == pytest.approx(1.04 * budget)


def test_a_pruned_model_timed_no_faster_than_the_dense_one_is_reported(
    fake_clock, monkeypatch
) -> None:
    """Every pruned model measures 10% slower than the unpruned one (a GPU at batch 1: kernel
    launches, not widths, set the time): the report and a warning say pruning bought no speed,
    and a plan that is faster says nothing of the kind."""
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:lenet300").eval(), (torch.randn(4, 1, 28, 28),)
    dense = fake_model_ms(model, x, Target(batch=4))
    fast = netslim.prune_(copy.deepcopy(model), Channels(target_speedup=2.0), example_inputs=x)
    assert "no faster" not in fast["latency"].get("note", "")
    _checks_scaled(monkeypatch, lambda measure, kept: 1.1 * dense)
    with pytest.warns(NetslimWarning, match="no faster"):
        report = netslim.prune_(model, Channels(target_speedup=2.0), example_inputs=x)
    info = report["latency"]
    assert info["measured_speedup"] == pytest.approx(1 / 1.1)
    assert "0.91x the unpruned model's speed, no faster" in info["note"]
    assert "torch at batch 4" in info["note"]


def test_the_best_checked_plan_is_returned_not_the_last(fake_clock, monkeypatch) -> None:
    """Checks 30% over, then 3% under, then 60% over what the table says: none agrees with its
    prediction, so all three are made; the second plan (under the target, its miss the
    smallest) is the one pruned and reported, not the third (further over it)."""
    factors = iter([1.3, 0.97, 1.6])
    _checks_scaled(monkeypatch, lambda measure, kept: next(factors) * measure(kept))
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    budget = fake_model_ms(model, x, Target(batch=2)) / 2
    info = netslim.prune_(model, Channels(target_speedup=2.0), example_inputs=x)["latency"]
    measured = [c["measured_ms"] for c in info["checks"]]
    assert len(measured) == 3 and measured[1] < budget < measured[2]
    assert info["returned_check"] == 1
    assert info["measured_ms"] == measured[1]
    assert info["predicted_ms"] == info["checks"][1]["predicted_ms"]
    assert fake_model_ms(model, x, Target(batch=2)) == pytest.approx(measured[1] / 0.97)


def test_best_check_prefers_the_target_then_the_smallest_miss_over_weighing_double() -> None:
    from netslim.structural.latency_checks import best_check

    assert best_check([130.0, 96.0, 103.0], 100.0) == 2  # within 5%, closest
    assert best_check([96.0, 103.0], 100.0) == 1  # both within 5%: the closer
    assert best_check([130.0, 80.0, 90.0], 100.0) == 2  # under, the closest
    assert best_check([130.0, 120.0], 100.0) == 1  # over, the closest
    assert best_check([74.2, 116.6, 105.9], 100.0) == 2  # 6% over beats 26% under (resnet56)
    assert best_check([88.0, 107.0], 100.0) == 0  # 7% over weighs 14%: 12% under wins
    assert best_check([107.0, 94.0], 100.0) == 1  # 6% under beats 7% over


def test_the_correction_averages_the_checks_misses() -> None:
    """Two checks 16% and 10% slower than the table: the next plan aims 13% lower, not 10%."""
    from netslim.structural.latency_checks import local_correction

    assert local_correction([1.16]) == pytest.approx(1.16)
    assert local_correction([1.16, 1.10]) == pytest.approx((1.16 * 1.10) ** 0.5)
    assert local_correction([0.5, 2.0]) == pytest.approx(1.0)


def _checks_scaled(monkeypatch, measure_as, *, steady: bool = True) -> None:
    """Plan checks measure ``measure_as(real_measure, kept)`` instead of the fake clock. With
    ``steady`` a plan timed again (``confirm``) measures what its first timing did; without,
    every timing asks ``measure_as`` again."""
    import netslim.structural.latency_alloc as latency_alloc

    real = latency_alloc.build_table

    def build(*args, **kwargs):
        table = real(*args, **kwargs)
        measure, seen = table.measure_kept, {}

        def measure_kept(kept, confirm=False, bypassed=()):
            assert not bypassed  # these cases plan widths only
            key = tuple(sorted(kept.items()))
            if not (steady and confirm and key in seen):
                seen[key] = measure_as(measure, kept)
            return seen[key]

        table.measure_kept = measure_kept
        return table

    monkeypatch.setattr(latency_alloc, "build_table", build)


def test_a_speedup_past_the_floor_is_reached_with_a_note(fake_clock) -> None:
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:lenet300").eval(), (torch.randn(4, 1, 28, 28),)
    dense = fake_model_ms(model, x, Target(batch=4))
    with pytest.warns(NetslimWarning, match="floor was lowered"):
        report = netslim.prune_(model, Channels(target_speedup=6.0), example_inputs=x)
    info = report["latency"]
    assert info["min_keep_fraction"] < 0.25 and "floor was lowered" in info["note"]
    assert info["predicted_ms"] <= dense / 6 + 1e-9
    assert fake_model_ms(model, x, Target(batch=4)) <= dense / 6 * 1.05  # the bench's 5%
    assert "--blocks" not in info["note"]  # lenet300 has no residual block to remove


def test_a_lowered_floor_names_blocks_where_the_model_has_them(fake_clock) -> None:
    """The note names blocks=True / --blocks when the plan could not remove blocks and the model
    has some (resnet20: 7x needs the floor at 1/8 on the fake clock); not when blocks were
    already an option."""
    torch.manual_seed(0)
    x = (torch.randn(2, 1, 28, 28),)
    model = netslim.build_model("zoo:resnet20").eval()
    with pytest.warns(NetslimWarning, match="floor was lowered") as warned:
        report = netslim.prune_(model, Channels(target_speedup=7.0), example_inputs=x)
    assert "blocks=True, --blocks" in report["latency"]["note"]
    assert any("blocks=True, --blocks" in str(w.message) for w in warned)
    model = netslim.build_model("zoo:resnet20").eval()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        report = netslim.prune_(model, Channels(target_speedup=7.0, blocks=True), example_inputs=x)
    assert "--blocks" not in (report["latency"].get("note") or "")
    assert all("--blocks" not in str(w.message) for w in warned)


def test_a_speedup_out_of_reach_keeps_the_floor_and_warns(fake_clock) -> None:
    """Past every floor the plan is the fastest the default floor allows, and the user is told
    (a NetslimWarning: the CLI prints it as one line and the job's report lists it)."""
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:lenet300").eval(), (torch.randn(4, 1, 28, 28),)
    with pytest.warns(NetslimWarning, match="the time target is unreachable"):
        report = netslim.prune_(model, Channels(target_speedup=1000.0), example_inputs=x)
    assert report["latency"]["min_keep_fraction"] == 0.25


def test_a_plan_well_under_its_target_says_which_step_did_not_fit(fake_clock) -> None:
    """Coarse widths (round_to=16 here, a ViT's 12 heads in the bench) can leave a plan far
    under the budget: the note names the cheapest wider step and shows it costs more than the
    time to spare; a plan within the tolerance of its budget gets no note."""
    from netslim.structural.latency_alloc import slack_note
    from netslim.structural.latency_checks import CHECK_TOLERANCE
    from netslim.structural.latency_knapsack import KnapsackState

    torch.manual_seed(0)
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    _, groups, table = _table(model, x)
    gen = torch.Generator().manual_seed(0)
    values = {g.id: value_curve(torch.rand(g.size, generator=gen)) for g in groups}
    seen = set()
    for frac in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3):
        budget = table.predict() * frac
        alloc = allocate(table, values, budget, round_to=16)
        note = slack_note(table, alloc, budget, table.sizes, {}, 16)
        under = alloc.predicted_ms < budget * (1 - CHECK_TOLERANCE)
        assert (note is not None) == under, (frac, alloc.predicted_ms / budget, note)
        seen.add(under)
        if note:
            state = KnapsackState(table, {**table.sizes, **alloc.counts})
            for g in groups:  # no group's next multiple of 16 fits what is left
                wider = [w for w in (16, 32, 48) if alloc.counts[g.id] < w <= g.size]
                if wider:
                    assert alloc.predicted_ms + state.delta(g.id, wider[0]) > budget
            assert "less time than the target" in note and "to spare" in note
    assert seen == {True, False}  # both cases happened
    # through prune_: the note reaches the plan's report (1.25x: 10% under on this clock)
    torch.manual_seed(0)
    config = Channels(target_speedup=1.25, round_to=16)
    with pytest.warns(NetslimWarning, match="less time than the target"):
        info = netslim.prune_(Net().eval(), config, example_inputs=x)["latency"]
    assert info["measured_ms"] < info["budget_ms"] * (1 - CHECK_TOLERANCE)
    assert "less time than the target" in info["note"]
    # the check, when there is one, decides: within the tolerance of the budget the user got
    # what was asked, whatever the prediction; far under it, the note speaks of the measurement
    alloc = allocate(table, values, table.predict() * 0.8, round_to=16)
    budget = alloc.predicted_ms / 0.9
    assert "predicted to take 10%" in slack_note(table, alloc, budget, table.sizes, {}, 16)
    assert slack_note(table, alloc, budget, table.sizes, {}, 16, measured_ms=budget) is None
    budget = alloc.predicted_ms / 0.97
    assert slack_note(table, alloc, budget, table.sizes, {}, 16) is None
    low = alloc.predicted_ms * 0.9
    assert "measured to take 13%" in slack_note(table, alloc, budget, table.sizes, {}, 16, 1, low)


def test_channels_blocks_removes_whole_blocks_and_reloads(fake_clock, tmp_path) -> None:
    """``blocks=True``: the plan removes residual blocks whole where their time (the fake
    clock's per-op and per-norm time, which no width removes) buys more than widths do; a
    removed block is ``nn.Identity``, the model runs as measured and reloads from its history."""
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    before = param_count(model)
    report = netslim.prune_(model, Channels(target_speedup=2.0, blocks=True), example_inputs=x)
    info = report["latency"]
    assert info["removable_blocks"] == 7
    removed = info["removed_blocks"]
    assert removed and all(isinstance(model.get_submodule(n), nn.Identity) for n in removed)
    assert report["bypassed_blocks"] == removed
    assert param_count(model) == report["params"]["after"] < before
    assert fake_model_ms(model, x, Target(batch=2)) == pytest.approx(info["measured_ms"])
    assert info["measured_speedup"] >= 2.0 * (1 - 0.05)
    netslim.save(model, tmp_path / "m")
    reloaded = netslim.load(tmp_path / "m")
    assert all(isinstance(reloaded.get_submodule(n), nn.Identity) for n in removed)
    assert torch.equal(reloaded(*x), model(*x))


def test_a_bypassed_hugging_face_layer_takes_its_keywords(fake_clock) -> None:
    """A Hugging Face decoder layer is called with masks, position embeddings and caches as
    keywords: its bypass takes them and returns the hidden states it was given, so the model
    runs as with the layer deleted (``nn.Identity`` raised a TypeError here, and a
    ``--blocks`` plan of any HF model failed while building its table)."""
    from tiny_hf import tiny_llama

    from netslim.core.removal import remove_blocks

    model = tiny_llama(num_hidden_layers=4, num_attention_heads=2)
    ids = torch.randint(0, 100, (1, 8))
    deleted = copy.deepcopy(model)
    remove_blocks(deleted, ["model.layers.1"])
    bypass(model, ["model.layers.1"])
    assert isinstance(model.model.layers[1], BypassedBlock)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, deleted(ids).logits)
    plan = tiny_llama(num_hidden_layers=4, num_attention_heads=2)
    report = netslim.prune_(plan, Channels(target_speedup=1.5, blocks=True), example_inputs=(ids,))
    assert report["latency"]["removable_blocks"] == 4  # the table timed them all out
    with torch.no_grad():
        assert plan(ids).logits.shape == (1, 8, 100)


def test_blocks_that_return_tuples_are_kept_whole(fake_clock) -> None:
    """A block returning a tuple (older Hugging Face layers: hidden states and attention
    weights) is residual but not offered to the plan: a bypass returns one tensor. The report
    names it."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return x + self.fc(x), None

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.blocks, self.head = nn.Linear(8, 16), nn.ModuleList(), nn.Linear(16, 4)
            self.blocks.extend([Block(), Block()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)[0]
            return self.head(x)

    model, x = Net().eval(), (torch.randn(2, 8),)
    assert [b.returns_tensor for b in find_blocks(model, x)] == [False, False]
    info = netslim.prune_(model, Channels(target_speedup=1.3, blocks=True), example_inputs=x)[
        "latency"
    ]
    assert info["removable_blocks"] == 0
    assert info["blocks_kept_whole"] == {
        "blocks.0": "returns a tuple",
        "blocks.1": "returns a tuple",
    }
    assert not any(isinstance(m, BypassedBlock) for m in model.modules())


def test_the_table_measures_what_a_bypassed_block_saves(fake_clock) -> None:
    """With ``blocks`` the table times the model with them all out: on the fake clock each conv
    inside a block brings one norm (0.05 ms) that no layer line holds, and the allocator's
    prediction for any set of bypassed blocks is then the pruned copy's time."""
    from netslim.structural.latency_knapsack import KnapsackState

    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    target = Target(batch=2)
    analysis = analyze(model, x)
    groups = candidates(analysis, Channels())
    names = tuple(removable_blocks(model, x))
    make = pruned_copies(model, x)
    table = build_table(model, x, analysis, groups, target, pruned_copy=make, blocks=names)
    assert table.block_fixed_ms == pytest.approx(0.05, rel=1e-6)
    options = block_options(table, names)
    rng = random.Random(0)
    for _ in range(5):
        gone = frozenset(rng.sample(names, rng.randint(1, len(names))))
        copied = copy.deepcopy(model)
        bypass(copied, sorted(gone))
        predicted = KnapsackState(table, table.sizes, options, gone).total()
        assert predicted == pytest.approx(fake_model_ms(copied, x, target), rel=1e-6)


def test_a_bypassed_block_saving_less_than_its_layers_gets_no_negative_credit(
    fake_clock, monkeypatch
) -> None:
    """A blocks-out point slower than the layers predict (a skewed fit, a noisy timing) must
    not credit blocks with negative op time: a narrowed block would then look dearer to
    remove than to keep."""

    def slow_without_blocks(model, reference, inputs, target):
        ratio = fake_time_ratio(model, reference, inputs, target)
        return ratio * 2 if any(isinstance(m, nn.Identity) for m in model.modules()) else ratio

    monkeypatch.setattr(op_timing, "time_ratio", slow_without_blocks)
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    analysis = analyze(model, x)
    groups = candidates(analysis, Channels())
    names = tuple(removable_blocks(model, x))
    make = pruned_copies(model, x)
    table = build_table(model, x, analysis, groups, Target(batch=2), pruned_copy=make, blocks=names)
    assert table.block_fixed_ms == 0.0
    assert all(b.fixed_ms == 0.0 for b in block_options(table, names))
    table.remainder_fixed = -1.0  # a fit can put the fixed remainder below 0
    fit_block_fixed(table, names, out_ms=0.0)  # however much the blocks saved
    assert table.block_fixed_ms == 0.0
    table.block_fixed_ms = None  # a table built without the blocks-out point: the share
    assert all(b.fixed_ms == 0.0 for b in block_options(table, names))


def test_blocks_with_calibration_batches_refit_and_reload(fake_clock, tmp_path) -> None:
    """With calibration batches ``Channels`` prunes a copy, refits it against the dense model
    and loads it back: the bypassed blocks must go in both, and the result reloads."""
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    batches = [(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    cfg = Channels(target_speedup=2.0, blocks=True)
    report = netslim.prune_(model, cfg, example_inputs=x, train_loader=batches)
    removed = report["latency"]["removed_blocks"]
    assert removed and "reconstruction" in report
    assert all(isinstance(model.get_submodule(n), nn.Identity) for n in removed)
    netslim.save(model, tmp_path / "m")
    reloaded = netslim.load(tmp_path / "m")
    assert torch.equal(reloaded(*x), model(*x))


def _resnet20_with_a_dead_block() -> tuple[nn.Module, tuple[torch.Tensor], str, list]:
    """resnet20 whose last block's branch outputs 0 (its last norm zeroed): the block passes
    its (non-negative, post-ReLU) input on unchanged, so bypassing it costs nothing; and
    calibration batches labelled with the model's own predictions."""
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    dead = removable_blocks(model, x)[-1]
    norm = model.get_submodule(dead).bn2
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.zero_()
    images = [torch.randn(8, 1, 28, 28) for _ in range(2)]
    with torch.no_grad():  # labels the model gets right: bypassing a live block raises the loss
        batches = [(im, model(im).argmax(1)) for im in images]
    return model, x, dead, batches


def test_block_weights_follow_what_bypassing_each_block_costs() -> None:
    """With data a block weighs what bypassing it costs (the loss increase), scaled so the
    weights average ``BLOCK_WEIGHT``: a block that changes nothing weighs next to nothing.
    Scoring leaves the model as it was; without data there are no measured weights."""
    from netslim.importance import Calibration

    model, x, dead, batches = _resnet20_with_a_dead_block()
    model.train()
    found = find_blocks(model, x)
    names = [b.name for b in found]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    weights = block_weights(model, found, Calibration(batches))
    assert weights is not None and set(weights) == set(names)
    assert sum(weights.values()) / len(weights) == pytest.approx(BLOCK_WEIGHT)
    assert weights[dead] == min(weights.values()) < BLOCK_WEIGHT / 50
    assert len(set(weights.values())) > 2  # measured, not one value
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert block_weights(model, found, None) is None


def test_block_weights_measure_the_users_loss() -> None:
    """``loss=`` is what bypassing a block is measured by: a loss that only the first block's
    output moves (how far the second block's input moves from its dense value) makes the first
    block weigh the most and the others next to nothing (cross-entropy ranks otherwise)."""
    from netslim.importance import Calibration

    model, x, _, batches = _resnet20_with_a_dead_block()
    found = find_blocks(model, x)
    first = found[0].name
    seen = {}
    handle = model.get_submodule(found[1].name).register_forward_pre_hook(
        lambda m, args: seen.__setitem__("in", args[0])
    )

    def loss(m: nn.Module, batch: tuple) -> torch.Tensor:
        m(batch[0])
        return (seen["in"] - dense[id(batch[0])]).pow(2).mean()

    dense = {}
    with torch.no_grad():
        for images, _ in batches:
            model(images)
            dense[id(images)] = seen["in"]
    try:
        weights = block_weights(model, found, Calibration(batches, loss=loss))
        default = block_weights(model, found, Calibration(batches))
    finally:
        handle.remove()
    assert weights is not None and default is not None
    assert max(weights, key=weights.get) == first
    assert sorted(weights.values())[-2] < weights[first] / 100
    assert max(default, key=default.get) != first


def test_block_weights_read_at_most_block_samples(monkeypatch) -> None:
    """Ablation runs the model once per block and batch, so the weights read whole batches up
    to ``BLOCK_SAMPLES`` samples, never more than the calibration's ``batches``: 8 of 128 (what
    the weights were chosen on), 16 of 64 when 20 may be read, 2 of 512, 1 of 2048 (the
    scoring itself stubbed: only what is read counts here)."""
    from netslim.importance import Calibration
    from netslim.structural import latency_blocks
    from netslim.structural.latency_blocks import BLOCK_SAMPLES

    model, x, _, _ = _resnet20_with_a_dead_block()
    found = find_blocks(model, x)
    monkeypatch.setattr(
        latency_blocks, "score_blocks", lambda m, b, d, c, loss=None: [1.0] * len(b)
    )

    class Counting:
        def __init__(self, size: int) -> None:
            self.size, self.pulled = size, 0

        def __iter__(self):
            for _ in range(20):
                self.pulled += 1
                yield torch.empty(self.size, 0)

    assert BLOCK_SAMPLES == 1024
    for size, batches, pulled in ((128, 8, 8), (64, 20, 16), (512, 8, 2), (2048, 8, 1)):
        loader = Counting(size)
        block_weights(model, found, Calibration(loader, batches=batches))
        assert loader.pulled == pulled, size


def test_batch_samples_reads_the_inputs_leading_size() -> None:
    from netslim.importance import batch_samples

    x = torch.zeros(5, 3)
    assert batch_samples(x) == 5
    assert batch_samples((x, torch.zeros(5))) == 5
    assert batch_samples({"attention_mask": None, "input_ids": torch.zeros(7, 4)}) == 7
    assert batch_samples(torch.tensor(1.0)) == 1
    # a model's example inputs too (the latency target's batch): nested, scalars skipped
    assert batch_samples((torch.tensor(2.0), [None, {"x": torch.zeros(3, 2)}])) == 3
    assert batch_samples((None, 4)) == 1


def test_block_weights_fall_back_to_one_weight_when_no_bypass_raises_the_loss(
    monkeypatch,
) -> None:
    """Scores all at or below 0 (bypassing any block lowers the loss on these batches) tell
    the blocks nothing apart: no measured weights (the plan weighs every block alike)."""
    from netslim.importance import Calibration
    from netslim.structural import latency_blocks

    model, x, _, batches = _resnet20_with_a_dead_block()
    found = find_blocks(model, x)
    monkeypatch.setattr(
        latency_blocks, "score_blocks", lambda m, b, d, c, loss=None: [-1.0] * len(b)
    )
    assert block_weights(model, found, Calibration(batches)) is None
    monkeypatch.setattr(
        latency_blocks,
        "score_blocks",
        lambda m, b, d, c, loss=None: [2.0 * (i % 2) for i in range(len(b))],
    )
    weights = block_weights(model, found, Calibration(batches))
    assert weights is not None and min(weights.values()) > 0  # a 0 counts as a floor share


def test_blocks_with_data_remove_the_block_that_costs_nothing(fake_clock) -> None:
    """``Channels(blocks=True)`` with calibration batches weighs each block by data (the
    report says so and lists the weights): the block whose bypass changes nothing is among
    those removed. Without data every block weighs ``BLOCK_WEIGHT``."""
    model, x, dead, batches = _resnet20_with_a_dead_block()
    cfg = Channels(target_speedup=1.3, blocks=True, reconstruct=False)
    plain = copy.deepcopy(model)
    info = netslim.prune_(model, cfg, example_inputs=x, train_loader=batches)["latency"]
    assert info["block_weights_from"] == "ablation"
    assert info["block_weights_s"] >= 0.0  # the scoring's own cost, apart from the solve's
    assert info["block_weights"][dead] == min(info["block_weights"].values())
    assert dead in info["removed_blocks"]
    assert isinstance(model.get_submodule(dead), nn.Identity)
    info = netslim.prune_(plain, cfg, example_inputs=x)["latency"]
    assert info["block_weights_from"] == "constant"
    assert set(info["block_weights"].values()) == {BLOCK_WEIGHT}


def test_a_plan_bypassing_a_missing_block_leaves_the_model_unchanged() -> None:
    from netslim.errors import PruningError
    from netslim.structural.engine import apply_plan
    from netslim.structural.plan import PruningPlan

    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:resnet20").eval(), (torch.randn(2, 1, 28, 28),)
    group = analyze(model, x).groups[0]
    plan = PruningPlan({group.id: [0, 1]}, {group.id: group.size}, ["layer1.0", "layer9.0"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    with pytest.raises(PruningError, match="layer9.0"):
        apply_plan(model, plan, x)
    assert [type(m) for m in model.modules()] == modules
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_plan_with_bypassed_blocks_round_trips_as_a_dict() -> None:
    from netslim.errors import ArtifactError
    from netslim.structural.plan import PruningPlan

    plan = PruningPlan({"a": [0, 2]}, {"a": 4}, ["blocks.1"])
    data = plan.to_dict()
    assert data["version"] == 2 and data["bypass"] == ["blocks.1"]
    assert PruningPlan.from_dict(data) == plan
    assert PruningPlan({"a": [0]}, {"a": 2}).to_dict() == {  # what older readers expect
        "version": 1, "groups": {"a": {"size": 2, "keep": [0]}}
    }  # fmt: skip
    with pytest.raises(ArtifactError, match="bypass"):
        PruningPlan.from_dict({**data, "bypass": "blocks.1"})


def test_round_to_is_kept(fake_clock) -> None:
    torch.manual_seed(0)
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    netslim.prune_(model, Channels(target_speedup=1.6, round_to=16), example_inputs=x)
    for m in (model.c1, model.c2):
        assert m.out_channels % 16 == 0 or m.out_channels in (32, 48)
    assert (model.c1.out_channels, model.c2.out_channels) != (32, 48)  # something went


def test_onnxruntime_plans_whole_layout_blocks(fake_clock) -> None:
    """Under an ONNX Runtime target every pruned width is a whole NCHWc block (the fake clock
    has no such staircase, so only the rule can make it so), and a user's round_to joins it."""
    block = op_timing.width_multiple("onnxruntime")
    assert block in (8, 16) and op_timing.width_multiple("torch") == 1
    for round_to, multiple in ((1, block), (3, 3 * block)):
        torch.manual_seed(0)
        model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
        config = Channels(target_speedup=1.6, runtime="onnxruntime", round_to=round_to)
        info = netslim.prune_(model, config, example_inputs=x)["latency"]
        assert info["round_to"] == multiple
        widths = (model.c1.out_channels, model.c2.out_channels)
        assert all(w % multiple == 0 or w in (32, 48) for w in widths)
        assert round_to > 1 or widths != (32, 48)  # something went


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_speedup": 0.5}, "target_speedup"),
        ({"target_speedup": True}, "target_speedup"),
        ({"target_latency_ms": -1}, "target_latency_ms"),
        ({"target_speedup": 2, "target_macs": 0.5}, "not"),
        ({"target_speedup": 2, "runtime": "tpu"}, "runtime"),
        ({"target_speedup": 2, "threads": 0}, "threads"),
        ({"target_speedup": 2, "batch": 0}, "batch"),
        ({"blocks": True}, "blocks=True needs a time target"),
        ({"target_speedup": 2, "blocks": 1}, "blocks must be True or False"),
    ],
)
def test_bad_time_targets(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        Channels(**kwargs)


def test_cuda_runtime_without_gpu_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="cuda"):
        op_timing.op_timer(Target("cuda"))


def test_more_threads_than_cores_is_a_clear_error_before_any_work(monkeypatch, tmp_path) -> None:
    """Threads beyond this process's cores would time their contention: refused by the
    planner's early check (the model untouched), by a table build and by ``netslim latency``."""
    from netslim.cli.main import main

    monkeypatch.setattr(op_timing, "usable_cores", lambda: 2)
    monkeypatch.setattr(op_timing, "time_torch", lambda *a, **k: pytest.fail("timed a layer"))
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="threads 3 exceeds the 2 CPU core"):
        netslim.prune_(model, Channels(target_speedup=2.0, threads=3), example_inputs=x)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before)
    netslim.prune_(copy.deepcopy(model), Channels(ratio=0.3, threads=3), example_inputs=x)
    with pytest.raises(ConfigError, match="exceeds"):
        op_timing.require_target(Target("torch", 3))
    op_timing.require_target(Target("torch", 2))
    out = tmp_path / "lat"
    assert main(["latency", "zoo:lenet300", "--threads", "3", "--out", str(out)]) == 2
    assert not out.exists()


def test_onnxruntime_missing_is_one_clear_error(monkeypatch) -> None:
    """The table's early check and the session helper give the same message, before any work."""
    from netslim.errors import UnsupportedModelError
    from netslim.export.onnx import session

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    messages = []
    for call in (lambda: op_timing.op_timer(Target("onnxruntime")), lambda: session(b"")):
        with pytest.raises(UnsupportedModelError) as caught:
            call()
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "onnxruntime is not installed" in messages[0]


def test_onnxruntime_sessions_do_not_spin() -> None:
    """Sessions timed side by side must not spin after a run (a spinning worker of the idle
    session takes a core from the running one), and tables timed before that are not reused."""
    pytest.importorskip("onnxruntime")
    from netslim.export.onnx import SPIN_CONFIG, session

    data, _ = op_timing._onnx_graph(OpShape("linear", 12, 5, 3, (4,)))
    for threads in (1, 2):
        options = session(data, threads).get_session_options()
        assert options.get_session_config_entry(SPIN_CONFIG) == "0"
        assert options.intra_op_num_threads == threads
    assert "nospin" in Target("onnxruntime", 2).key()
    assert "nospin" not in Target("torch", 2).key()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_runtime_times_a_layer() -> None:
    op = OpShape("conv", 16, 32, 2, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1))
    assert op_timing.op_timer(Target("cuda"))(op) > 0


def test_onnxruntime_op_graph_matches_torch() -> None:
    """The one-node ONNX graphs compute what the layer computes (shape and arithmetic)."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import numpy_helper

    from netslim.export.onnx import session

    for op in (
        OpShape("conv", 8, 16, 2, (6, 6), (3, 3), (2, 2), (1, 1), (1, 1), groups=1),
        OpShape("conv", 8, 8, 1, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), groups=8),
        OpShape("linear", 12, 5, 3, (4,)),
    ):
        data, shape = op_timing._onnx_graph(op)
        sess = session(data, 1)
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        got = sess.run(None, {"x": x})[0]
        import onnx

        w = {
            i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(data).graph.initializer
        }
        xt = torch.from_numpy(x)
        if op.kind == "linear":
            want = xt @ torch.from_numpy(w["W"]) + torch.from_numpy(w["B"])
        else:
            want = torch.nn.functional.conv2d(
                xt, torch.from_numpy(w["W"]), torch.from_numpy(w["B"]), op.stride, op.padding,
                op.dilation, op.groups,
            )  # fmt: skip
        assert np.allclose(got, want.numpy(), atol=1e-4)


FAST = ["--data", "synthetic", "--limit-train", "64", "--limit-test", "64", "--epochs", "0"]
FAST += ["--finetune-epochs", "0", "--no-progress", "--no-latency", "--method", "channel"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-speedup", "0.5"], "target_speedup"),
        (["--target-speedup", "2", "--runtime", "tpu"], "runtime"),
        (["--target-speedup", "2", "--threads", "0"], "threads"),
        (["--target-speedup", "2", "--batch", "-3"], "batch"),
        (["--target-speedup", "2", "--target-macs", "0.5"], "not target_macs and target_speedup"),
        (["--target-latency", "0"], "--target-latency"),  # report names = CLI names
        (["--blocks"], "--blocks needs --target-latency or --target-speedup"),
        (["--runtime", "onnxruntime"], "--runtime needs --target-latency or --target-speedup"),
        (["--threads", "2"], "--threads needs --target-latency or --target-speedup"),
        (["--batch", "4"], "--batch needs --target-latency or --target-speedup"),
        (["--target-speedup", "2", "--threads", "3"], "threads 3 exceeds the 2 CPU core(s)"),
    ],
)
def test_cli_time_target_bad_values(args, message, tmp_path, capsys, monkeypatch) -> None:
    from netslim.cli.main import main

    monkeypatch.setattr(op_timing, "usable_cores", lambda: 2)

    out = tmp_path / "out"
    code = main(["prune", "zoo:lenet300", *FAST, *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("netslim: error:") and "\n" not in err
    assert message in err
    assert not out.exists()


def test_refresh_remeasures_a_table_cached_under_load(fake_clock, monkeypatch) -> None:
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    sizes = {g.id: g.size for g in candidates(analyze(model, x), Channels())}
    monkeypatch.setattr(op_timing, "op_timer", lambda target: lambda op: 3 * fake_op_ms(op))
    _, _, loaded = _table(model, x)  # measured while something else ran: every op 3x slower
    monkeypatch.setattr(op_timing, "op_timer", lambda target: fake_op_ms)
    _, _, cached = _table(model, x)
    assert cached.measured_points == 0  # the cache cannot tell: it serves the loaded points
    assert cached.layer_ms(sizes) == pytest.approx(loaded.layer_ms(sizes))
    analysis = analyze(model, x)
    groups = candidates(analysis, Channels())
    fresh = build_table(
        model, x, analysis, groups, Target(), pruned_copy=pruned_copies(model, x), refresh=True
    )
    assert fresh.measured_points > 0
    assert fresh.layer_ms(sizes) == pytest.approx(loaded.layer_ms(sizes) / 3)
    _, _, again = _table(model, x)  # the refreshed points replaced the loaded ones on disk
    assert again.measured_points == 0
    assert again.layer_ms(sizes) == pytest.approx(fresh.layer_ms(sizes))


def test_a_plan_check_calibrates_the_next_table(fake_clock, monkeypatch) -> None:
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    _, groups, first = _table(model, x)
    kept = {g.id: max(8, g.size // 4) if i % 2 else g.size for i, g in enumerate(groups)}
    predicted = first.predict(kept)
    # the plan runs 10% slower than the table says (in-model effects the uniform points miss)
    monkeypatch.setattr(
        op_timing, "time_ratio", lambda m, r, i, t: 1.1 * fake_time_ratio(m, r, i, t)
    )
    checked = first.measure_kept(kept)
    assert checked == pytest.approx(1.1 * predicted, rel=0.02)
    _, _, second = _table(model, x)  # from the cache: the check is a calibration point now
    assert second.measured_points == 0
    assert abs(second.predict(kept) - checked) < 0.5 * abs(predicted - checked)
    monkeypatch.setattr(op_timing, "time_ratio", fake_time_ratio)
    analysis = analyze(model, x)
    fresh = build_table(
        model, x, analysis, groups, Target(), pruned_copy=pruned_copies(model, x), refresh=True
    )  # a refreshed table forgets the checks measured with the old points
    assert fresh.predict(kept) == pytest.approx(predicted, rel=0.02)


def test_a_resolve_to_widths_already_checked_ends_the_search(monkeypatch) -> None:
    """A check runs 8% over its prediction and the re-solve gives back the plan just checked
    (the solver stubbed to do so, as a grid too coarse for the correction does): the search
    stops after that one check instead of recording its cached timing again (ViT-B/16 at 2
    threads, run 03:32 of 2026-12-02: one plan's 116.79 ms listed twice)."""
    import types

    import netslim.structural.latency_checks as latency_checks
    from netslim.structural.latency_knapsack import Allocation

    alloc = Allocation({"g": 16}, predicted_ms=10.0, value=1.0)
    monkeypatch.setattr(latency_checks, "allocate_reaching", lambda *a, **k: alloc)
    timed: list[dict] = []
    table = types.SimpleNamespace(
        measure_kept=lambda kept, confirm=False, bypassed=(): timed.append(kept) or 10.8
    )
    checks, _ = latency_checks.check_plans(table, {}, 9.0, alloc, {"g": 32}, {"fixed": {}})
    assert len(checks) == 1 and len(timed) == 1
    assert checks[0].measured_ms == 10.8


def test_a_check_far_off_its_prediction_is_timed_again(fake_clock, monkeypatch) -> None:
    """A plan's first paired timing ran 40% fast (a noisy round): confirmed, the check is the
    median of three timings and is cached as such, so the next table neither times it again
    nor fits the noisy timing."""
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    _, groups, table = _table(model, x)
    kept = {g.id: max(8, g.size // 4) if i % 2 else g.size for i, g in enumerate(groups)}
    true = fake_model_ms(pruned_copies(model, x)(kept), x, Target())
    factors = iter([0.6, 1.0, 1.1])
    monkeypatch.setattr(
        op_timing, "time_ratio", lambda m, r, i, t: next(factors) * fake_time_ratio(m, r, i, t)
    )
    assert table.measure_kept(kept) == pytest.approx(0.6 * true)
    assert table.measure_kept(kept, confirm=True) == pytest.approx(true)
    assert table.measure_kept(kept, confirm=True) == pytest.approx(true)  # no timing left
    _, _, again = _table(model, x)
    assert again.measured_points == 0
    assert again.measure_kept(kept, confirm=True) == pytest.approx(true)


def test_planning_confirms_a_check_far_off_its_prediction(fake_clock, monkeypatch) -> None:
    """The first timing of each plan runs 40% fast, the next ones true: the plan is checked
    once, confirmed, and reported at its true time, not re-solved after the noisy timing."""
    timings: dict[tuple, int] = {}

    def noisy_first(measure, kept):
        key = tuple(sorted(kept.items()))
        timings[key] = timings.get(key, 0) + 1
        return measure(kept) * (0.6 if timings[key] == 1 else 1.0)

    _checks_scaled(monkeypatch, noisy_first, steady=False)
    torch.manual_seed(0)
    model, x = netslim.build_model("zoo:lenet300").eval(), (torch.randn(4, 1, 28, 28),)
    info = netslim.prune_(model, Channels(target_speedup=2.0), example_inputs=x)["latency"]
    (check,) = info["checks"]
    assert check["measured_ms"] == pytest.approx(check["predicted_ms"], rel=0.05)
    assert info["measured_ms"] == pytest.approx(fake_model_ms(model, x, Target(batch=4)))


def test_stale_table_warning() -> None:
    from netslim.structural.latency_checks import stale_table_warning

    assert stale_table_warning([]) is None
    assert stale_table_warning([{"predicted_ms": 10.0, "measured_ms": 11.0}]) is None
    checks = [
        {"predicted_ms": 10.0, "measured_ms": 20.0},
        {"predicted_ms": 10.0, "measured_ms": 5.0},
    ]
    message = stale_table_warning(checks)
    assert message and "-50%" in message and "--refresh" in message
    fresh = stale_table_warning(checks, lines_cached=False)  # measured now: refreshing won't help
    assert fresh and "-50%" in fresh and "--refresh" not in fresh and "just now" in fresh


def test_a_table_knows_whether_its_lines_came_from_the_cache(fake_clock) -> None:
    """The first build measures the lines, the second reads them all from the cache."""
    torch.manual_seed(0)
    model, x = Net().eval(), (torch.randn(1, 3, 12, 12),)
    assert not _table(model, x)[2].lines_cached
    assert _table(model, x)[2].lines_cached


def test_the_printed_table_says_slower_not_a_speed_up_below_one() -> None:
    from netslim.report import time_target_lines

    plan = {"runtime": "cuda", "threads": 1, "batch": 1, "dense_ms": 4.0, "budget_ms": 2.0}
    plan.update(predicted_ms=4.2, measured_ms=5.0, measured_speedup=0.8)
    (_, line) = time_target_lines([{"latency": plan}])
    assert line.endswith("5.000 ms, 1.25x slower")


def test_the_printed_table_reads_an_iterative_target_against_the_unpruned_model() -> None:
    """Each round plans against the model it starts from: the target line compares the last
    round's budget with the first round's unpruned model, and each round's check says what it
    was timed against (before, the line read 1.41x for a 2x target met in two rounds)."""
    from netslim.report import time_target_lines

    where = {"runtime": "torch", "threads": 1, "batch": 1}
    one = {**where, "dense_ms": 10.0, "budget_ms": 7.07, "predicted_ms": 7.0, "measured_ms": 7.0}
    two = {**where, "dense_ms": 7.0, "budget_ms": 5.0, "predicted_ms": 5.0, "measured_ms": 5.0}
    one["measured_speedup"], two["measured_speedup"] = 10 / 7, 7 / 5
    head, first, second = time_target_lines([{"latency": one}, {"latency": two}])
    assert head.startswith("time target (torch, 1 thread(s), batch 1, 2 rounds): 5.000 ms, 2.00x")
    assert first.startswith("  round 1:") and "paired with the unpruned model: 7.000" in first
    assert "paired with the model before the round: 5.000 ms, 1.40x faster" in second


def test_cli_prune_to_speedup_and_latency_command(fake_clock, tmp_path, capsys) -> None:
    import json

    from netslim.cli.main import main

    out = tmp_path / "job"
    code = main(["prune", "zoo:lenet300", *FAST, "--target-speedup", "1.5", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["target_speedup"] == 1.5
    assert report["params_after"] < report["params_before"]
    # the table printed says what was asked and what the plan's check measured
    plan = report["steps"][-1]["latency"]
    printed = capsys.readouterr().out
    assert f"{plan['budget_ms']:.3f} ms, 1.50x faster than the unpruned model's" in printed
    assert f"{plan['predicted_ms']:.3f} ms; its check" in printed
    assert f"{plan['measured_ms']:.3f} ms, {plan['measured_speedup']:.2f}x faster" in printed
    code = main(["latency", "zoo:lenet300", "--batch", "4", "--out", str(tmp_path / "lat")])
    assert code == 0
    table = json.loads((tmp_path / "lat" / "latency_table.json").read_text())
    assert {la["name"] for la in table["layers"]} == {"1", "3", "5"}
    assert (tmp_path / "lat" / "latency_table.png").stat().st_size > 0
    capsys.readouterr()
    refreshed = ["latency", "zoo:lenet300", "--batch", "4", "--out", str(tmp_path / "lat")]
    assert main(refreshed) == 0 and " 0 points measured" in capsys.readouterr().out
    assert main([*refreshed, "--refresh"]) == 0
    assert " 0 points measured" not in capsys.readouterr().out
    assert main(["latency", "zoo:lenet300", "--runtime", "tpu"]) == 2
    assert "runtime" in capsys.readouterr().err


def test_iterative_schedule_splits_a_speedup_per_round(fake_clock) -> None:
    from netslim.jobs.pipeline import _time_targets
    from netslim.jobs.settings import JobSettings

    model, x = netslim.build_model("zoo:lenet300").eval(), (torch.randn(2, 1, 28, 28),)
    settings = JobSettings(
        model="zoo:lenet300", method="channel", schedule="iterative", rounds=3, target_speedup=8.0
    )
    assert _time_targets(model, settings, x) == pytest.approx([2.0, 2.0, 2.0])
    dense = fake_model_ms(model, x, Target(batch=2))
    settings = replace(settings, target_speedup=None, target_latency_ms=dense / 4)
    assert _time_targets(model, settings, x) == pytest.approx([4 ** (1 / 3)] * 3)
    assert _time_targets(model, replace(settings, schedule="oneshot"), x) == []


def test_each_round_makes_up_what_the_earlier_rounds_missed() -> None:
    """Round k aims at the target's share up to round k over what the earlier rounds' checks
    measured (paired with the model each started from): an overshoot is taken back by the next
    round instead of compounding, a round already past its share prunes nothing (1.0)."""
    from netslim.jobs.pipeline import _round_speedup

    per_round = [1.5**0.5, 1.5**0.5]
    assert _round_speedup(per_round, 0, []) == pytest.approx(1.5**0.5)
    measured = [{"latency": {"measured_speedup": 1.27}}]
    assert _round_speedup(per_round, 1, measured) == pytest.approx(1.5 / 1.27)
    assert _round_speedup(per_round, 1, [{"latency": {"measured_speedup": 2.0}}]) == 1.0
    assert _round_speedup(per_round, 1, [{"notes": []}]) == pytest.approx(1.5**0.5)  # unmeasured
    three = [2.0, 2.0, 2.0]
    done = [{"latency": {"measured_speedup": 1.9}}, {"latency": {"measured_speedup": 2.2}}]
    assert _round_speedup(three, 2, done) == pytest.approx(8 / (1.9 * 2.2))


def test_page_faults_are_counted_per_call() -> None:
    import mmap

    def touch_fresh_pages() -> None:
        with mmap.mmap(-1, 4 << 20) as fresh:  # 4 MiB the kernel maps on first touch
            fresh.madvise(mmap.MADV_NOHUGEPAGE)  # one fault a page, whatever the THP setting
            fresh[:: mmap.PAGESIZE] = b"x" * len(range(0, 4 << 20, mmap.PAGESIZE))

    faults = op_timing.faults_per_call(touch_fresh_pages)
    assert faults is not None and faults >= (4 << 20) // mmap.PAGESIZE * 0.9
    assert op_timing.faults_per_call(lambda: None) < 50


def test_retained_freed_memory_takes_no_page_faults() -> None:
    import json
    import subprocess
    import sys

    # a fresh process: the setting is process-wide and cannot be undone
    code = """
import json, torch, netslim
from netslim._runtime import allocator
from netslim.structural.op_timing import Target, faults_per_call
big = lambda: torch.empty(16 << 20).fill_(1.0)  # 64 MiB: past glibc's largest mmap threshold
before = (faults_per_call(big), allocator(), Target().key())
retained = netslim.retain_freed_memory()
warm = min(faults_per_call(big) for _ in range(3))  # the heap grows once, on first use
print(json.dumps([*before, retained, warm, allocator(), Target().key()]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    faults, name, key, retained, faults_kept, name_kept, key_kept = json.loads(out.stdout)
    assert faults > 0 and name == "system" and "alloc=" not in key  # 16384 with 4 KiB pages
    if not retained:
        pytest.skip("needs glibc's malloc")
    assert faults_kept < faults / 10 and name_kept == "glibc-retain"
    assert "alloc=glibc-retain" in key_kept


def test_allocator_names_a_preloaded_or_configured_malloc(monkeypatch) -> None:
    from netslim import _runtime

    monkeypatch.setattr(_runtime, "_retaining", False)
    for var in ("LD_PRELOAD", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(var, raising=False)
    assert _runtime.allocator() == "system"
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    assert _runtime.allocator() == "system"  # the heap is still trimmed: freed memory goes back
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4294967296")
    assert _runtime.allocator() == "glibc-retain"
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert _runtime.allocator() == "jemalloc"


def test_a_plan_names_an_allocator_that_faults(fake_clock, monkeypatch) -> None:
    from netslim.structural import latency_alloc

    monkeypatch.setattr(latency_alloc, "allocator", lambda: "system")
    model, x = Net().eval(), torch.randn(1, 3, 16, 16)
    fake_clock["faults"] = 5000
    report = netslim.prune_(copy.deepcopy(model), Channels(target_speedup=1.5), example_inputs=(x,))
    latency = report["latency"]
    assert latency["page_faults_per_call"] == 5000 and latency["allocator"] == "system"
    assert "5000 page faults" in latency["note"] and "--retain-freed-memory" in latency["note"]
    fake_clock["faults"] = 10  # counted once per model and target (cached with the table)
    other = nn.Sequential(Net(), nn.Linear(10, 4)).eval()
    report = netslim.prune_(other, Channels(target_speedup=1.5), example_inputs=(x,))
    assert report["latency"]["page_faults_per_call"] == 10
    assert "page faults" not in report["latency"].get("note", "")


def test_cli_retain_freed_memory_flag(monkeypatch) -> None:
    import argparse

    from netslim import _runtime
    from netslim.cli.latency import add_time_target_args, apply_time_target_args

    calls = []
    monkeypatch.setattr(_runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    parser = argparse.ArgumentParser()
    add_time_target_args(parser)
    apply_time_target_args(parser.parse_args([]))
    assert calls == []
    apply_time_target_args(parser.parse_args(["--retain-freed-memory"]))
    assert calls == [1]


def test_latency_command_names_an_allocator_that_faults(fake_clock, tmp_path, capsys) -> None:
    import json

    from netslim.cli.main import main
    from netslim.structural import latency_alloc

    fake_clock["faults"] = 4000
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(latency_alloc, "allocator", lambda: "system")
        assert main(["latency", "zoo:lenet300", "--out", str(tmp_path)]) == 0
    assert "4000 page faults" in capsys.readouterr().out
    assert json.loads((tmp_path / "latency_table.json").read_text())["page_faults_per_call"] == 4000
