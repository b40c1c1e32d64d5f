"""Compaction bench: channel-sparse models made physically smaller by ``compact_``.

Rows: vgg_small and resnet20 with every conv pruned 50% by
``torch.nn.utils.prune.ln_structured(n=1, dim=0)`` + ``prune.remove`` (the lecture's recipe),
once as built (BatchNorm at its initial statistics: a zeroed filter then carries 0) and once
after a short training (real BN statistics: a zeroed filter carries BN's shift, a constant);
and lenet5 trained with the group-lasso penalty (``--method slimming --l1-reg`` on a model
without BN). Per row: parameters and MACs before, what the zeroed filters account for (every
zeroed filter whose coupled group agrees, removed by the engine), after ``compact_``; channels
removed (dead / constant folded) and kept (why); max abs difference to the sparse model;
batch-1 single-thread latency before/after and a save/load round trip.

    .venv/bin/python bench/compact.py prepare    # train + sparsify, cached
    .venv/bin/python bench/compact.py            # compact, time -> docs/compact.md

Run the short timed step on an otherwise idle machine (BENCH_UNDER says how it ran; the doc
prints it with the load average before and after).
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import DOCS, machine_line, markdown_table, write_results  # noqa: E402

import netslim  # noqa: E402
from netslim.data import make_loaders  # noqa: E402
from netslim.measure import count_macs, count_params, latency_ms  # noqa: E402
from netslim.models.spec import build_model  # noqa: E402
from netslim.structural import PruningPlan, apply_plan  # noqa: E402
from netslim.structural.compact import compact_, summary  # noqa: E402
from netslim.structural.config import Channels  # noqa: E402
from netslim.structural.constants import role, zero_per_index  # noqa: E402
from netslim.structural.engine import candidates  # noqa: E402
from netslim.structural.groups import analyze  # noqa: E402
from netslim.training import evaluate, train  # noqa: E402

SEED = 0
TRAIN = {"limit_train": 10000, "epochs": 1, "lr": 1e-3}
GROUP_LASSO = {"lam": 0.07, "limit_train": 20000, "epochs": 2, "lr": 0.05}
LATENCY = {"threads": 1, "warmup": 20, "repeats": 200}
# how the timed step ran (the doc says it), e.g. "alone" or "beside one training job"
UNDER = os.environ.get("BENCH_UNDER", "no other job started by this project")


def loaders() -> tuple[Any, Any]:
    return make_loaders(
        "fashion-mnist", batch_size=128, limit_train=GROUP_LASSO["limit_train"],
        limit_test=2000, seed=SEED,
    )  # fmt: skip


def torch_pruned(name: str, trained: bool, train_loader: Any) -> nn.Module:
    torch.manual_seed(SEED)
    model = build_model(f"zoo:{name}")
    if trained:
        subset = [b for k, b in zip(range(TRAIN["limit_train"] // 128), train_loader, strict=False)]
        train(model, subset, epochs=TRAIN["epochs"], lr=TRAIN["lr"], progress=False)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            prune.ln_structured(m, "weight", amount=0.5, n=1, dim=0)
            prune.remove(m, "weight")
    return model.eval()


def zeroed_filters(model: nn.Module, x: tuple) -> tuple[dict[str, int], int, int]:
    """What the zeroed filters account for: the model with every zeroed filter removed whose
    producers in the coupled group all agree (by the engine), independently of ``compact_``'s
    constant analysis. Returns (params/MACs after, zeroed filters, of them removable)."""
    work = copy.deepcopy(model)
    analysis = analyze(work, x)
    modules = dict(work.named_modules())
    plan = PruningPlan()
    zeroed = removable = 0
    for m in work.modules():
        if isinstance(m, nn.Conv2d):
            zeroed += int((m.weight.detach().flatten(1).abs().sum(1) == 0).sum())
    for g in candidates(analysis, Channels()):
        outs = [m for m in g.members if role(modules, m) == "out"]
        if not outs:
            continue
        agree = torch.ones(g.size, dtype=torch.bool)
        for m in outs:
            agree &= zero_per_index(analysis.graph.tensors[m.name], m, g.size)
        idx = agree.nonzero().flatten().tolist()[: g.size - 1]
        if idx:
            removable += len(idx) * sum(1 for m in outs if isinstance(modules[m.module], nn.Conv2d))
            plan.keep[g.id] = sorted(set(range(g.size)) - set(idx))
            plan.sizes[g.id] = g.size
    apply_plan(work, plan, x)
    return {"params": count_params(work), "macs": count_macs(work, x)}, zeroed, removable


def smallest_unit_norm(model: nn.Module, x: tuple) -> float:
    """The smallest L2 norm of a channel's whole unit (every parameter slice it owns)."""
    analysis = analyze(model, x)
    params = dict(model.named_parameters())
    best = float("inf")
    for g in candidates(analysis, Channels()):
        sq = torch.zeros(g.size, dtype=torch.float64)
        for m in g.members:
            if m.is_param and m.name in params:
                t = params[m.name].detach().movedim(m.dim, 0)
                valid = (m.index >= 0).nonzero().flatten()
                rows = t.index_select(0, valid).reshape(len(valid), -1).double()
                sq.index_add_(0, m.index[valid], rows.pow(2).sum(1))
        best = min(best, float(sq.sqrt().min()))
    return best


def outputs(model: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model.eval()(t) for t in inputs]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def row(label: str, model: nn.Module, test_loader: Any, out_dir: Path, **kw: Any) -> dict:
    x = (torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(SEED)),)
    checks = [torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    checks.append(next(iter(test_loader))[0][:64])
    reference = outputs(model, checks)
    expected, zeroed, removable = zeroed_filters(model, x)
    unit_min = smallest_unit_norm(model, x)
    acc_before = evaluate(model, test_loader)
    lat_before = latency_ms(model, x, **LATENCY)
    report = compact_(model, x, **kw)
    lat_after = latency_ms(model, x, **LATENCY)
    diff = max_diff(reference, outputs(model, checks))
    netslim.save(model, out_dir / label)
    loaded = netslim.load(out_dir / label)
    load_diff = max_diff(reference, outputs(loaded, checks))
    s = summary(report)
    return {
        "label": label,
        "params": report["params"],
        "macs": report["macs"],
        "expected": expected,
        "zeroed_filters": zeroed,
        "zeroed_removable": removable,
        "removed": s["removed"],
        "kept": s["kept"],
        "snapped": report.get("snapped"),
        "smallest_unit_norm": unit_min,
        "max_abs_diff": diff,
        "load_max_abs_diff": load_diff,
        "accuracy": {"before": acc_before, "after": evaluate(model, test_loader)},
        "latency_ms": {
            "before": lat_before.median,
            "after": lat_after.median,
            "before_iqr": lat_before.iqr,
            "after_iqr": lat_after.iqr,
        },  # fmt: skip
    }


def group_lasso_model(train_loader: Any, proximal: bool = True) -> nn.Module:
    """lenet5 trained with group lasso over the engine's channel groups in proximal form: SGD
    steps on the data loss, each followed by ``GroupLassoPenalty.prox_`` (group
    soft-thresholding, tau = lr·λ), which sets whole units to exactly zero."""
    from netslim.regularization import GroupLassoPenalty

    torch.manual_seed(SEED)
    model = build_model("zoo:lenet5")
    lam, lr = GROUP_LASSO["lam"], GROUP_LASSO["lr"]
    penalty = GroupLassoPenalty(lam, model, (torch.randn(1, 1, 28, 28),))
    if proximal:
        train(
            model, train_loader, epochs=GROUP_LASSO["epochs"], lr=lr, optimizer="sgd",
            on_step=lambda _step: penalty.prox_(model, lr * lam), progress=False,
        )  # fmt: skip
    else:  # as `netslim prune --method slimming --l1-reg` trains: penalty in the loss, Adam
        train(
            model, train_loader, epochs=GROUP_LASSO["epochs"], lr=1e-3, regularizer=penalty,
            progress=False,
        )  # fmt: skip
    return model.eval()


def fmt_kv(d: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in d.items()) or "-"


def write_doc(rows: list[dict], load: dict[str, str]) -> Path:
    table = []
    for r in rows:
        p, m, e, lat = r["params"], r["macs"], r["expected"], r["latency_ms"]
        table.append([
            r["label"], f"{p['before']:,}", f"{e['params']:,}", f"{p['after']:,}",
            f"{m['before'] / 1e6:.2f}", f"{e['macs'] / 1e6:.2f}", f"{m['after'] / 1e6:.2f}",
            f"{r['zeroed_removable']}/{r['zeroed_filters']}", fmt_kv(r["removed"]),
            fmt_kv(r["kept"]), f"{r['max_abs_diff']:.1e}", f"{r['load_max_abs_diff']:.1e}",
            f"{lat['before']:.3f}", f"{lat['after']:.3f}", f"{lat['before'] / lat['after']:.2f}x",
        ])  # fmt: skip
    headers = [
        "model", "params before", "params: zeroed filters removed", "params after compact",
        "MMACs before", "MMACs: zeroed removed", "MMACs after", "zeroed filters in agreeing groups",
        "channels removed", "channels kept (why)", "max abs diff", "after load",
        "ms before", "ms after", "speed-up",
    ]  # fmt: skip
    text = f"""# Compaction: channel-sparse models made physically smaller

Generated by `bench/compact.py` ({machine_line()}); latency under {UNDER}, load
average before {load["before"]}, after {load["after"]}.

{markdown_table(headers, table)}

- **Sparse models**: every `nn.Conv2d` pruned 50% by `torch.nn.utils.prune.ln_structured(n=1,
  dim=0)` then `prune.remove`; *as built* = the zoo model untrained (BatchNorm running mean 0,
  var 1: a zeroed filter carries exactly 0); *trained* = {TRAIN["epochs"]} epoch on
  {TRAIN["limit_train"]} Fashion-MNIST images first (real BN statistics: a zeroed filter carries
  relu(BN shift), a non-zero constant). *group lasso* = lenet5 (no BN) trained
  {GROUP_LASSO["epochs"]} epochs on {GROUP_LASSO["limit_train"]} images with
  `GroupLassoPenalty(λ={GROUP_LASSO["lam"]})` (the penalty `netslim prune --method slimming
  --l1-reg` uses on models without BN) over the engine's channel units: *proximal* = SGD
  (lr {GROUP_LASSO["lr"]}, momentum 0.9) with `GroupLassoPenalty.prox_` (group
  soft-thresholding, tau = lr·λ) after each step, which sets whole units to exactly zero;
  *subgradient* = the penalty in the loss with Adam (lr 1e-3), as `--l1-reg` trains today:
  it shrinks units but none reaches zero, so `compact_` (exact zeros only, `zero_tol=0`)
  finds nothing to remove. `compact_(..., zero_tol=T)` / `netslim compact --zero-tol T` would
  snap units with norm <= T, changing the function by the reported amount.
- **params/MMACs: zeroed removed** = what the zeroed filters account for: the engine removes
  every zeroed filter whose coupled group agrees (all producing convs of the channel zero),
  computed independently of `compact_`'s constant analysis. In resnet20 the residual stream
  couples the stem and every block's last conv, which zeroed different filters: those filters
  cannot be removed by anyone without changing the function ("coupled" in the kept column).
- **channels removed**: *dead* (carries 0), *folded* (a constant, added to the consumers'
  biases), *unused* (consumers' columns all zero). **kept**: *padding* = a non-zero constant
  that reaches a zero-padded 3x3 conv (the border outputs see 0 instead of the constant, so no
  bias is exact); *coupled* = another producer of the residual channel still computes it.
- **max abs diff**: compacted vs the sparse model on 2x8 random inputs and 64 test images;
  *after load*: the same for `netslim.load` of the saved compacted model (history replay).
- **latency**: batch 1, one thread, median of {LATENCY["repeats"]} runs after
  {LATENCY["warmup"]} warm-up; before = the sparse dense model (masks removed), after = compacted.
"""
    for r in rows:
        if "group lasso" in r["label"]:
            text += (
                f"- **{r['label']}**: test accuracy {r['accuracy']['before']:.3f}, smallest "
                f"channel unit norm (every parameter slice a channel owns) "
                f"{r['smallest_unit_norm']:.3g}.\n"
            )
    path = DOCS / "compact.md"
    path.write_text(text)
    return path


CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "netslim-bench-compact"
CASES = [("vgg_small", False), ("vgg_small", True), ("resnet20", False), ("resnet20", True)]


def prepare(only_group_lasso: bool = False) -> None:
    """Train and sparsify every case once; saved with netslim.save (the sparse models)."""
    torch.set_num_threads(1)
    train_loader, _ = loaders()
    for name, trained in [] if only_group_lasso else CASES:
        model = torch_pruned(name, trained, train_loader)
        netslim.save(model, CACHE / "sparse" / f"{name}_{'trained' if trained else 'as_built'}")
        print("prepared", name, trained, flush=True)
    netslim.save(group_lasso_model(train_loader), CACHE / "sparse" / "lenet5_group_lasso")
    subgradient = group_lasso_model(train_loader, proximal=False)
    netslim.save(subgradient, CACHE / "sparse" / "lenet5_group_lasso_subgradient")
    print("prepared lenet5 group lasso (proximal, subgradient)", flush=True)


def main() -> None:
    torch.set_num_threads(1)
    _, test_loader = loaders()
    load = {"before": f"{os.getloadavg()[0]:.2f}"}
    rows = []
    labels = [(f"{n}_{'trained' if t else 'as_built'}", {}) for n, t in CASES]
    labels += [("lenet5_group_lasso", {}), ("lenet5_group_lasso_subgradient", {})]
    for label, kw in labels:
        model = netslim.load(CACHE / "sparse" / label)
        rows.append(row(label, model, test_loader, CACHE / "compact", **kw))
        rows[-1]["label"] = label.replace("_", " ").replace("as built", "as built")
        print(rows[-1], flush=True)
    load["after"] = f"{os.getloadavg()[0]:.2f}"
    write_results("compact", {"rows": rows, "load": load, "machine": machine_line()})
    print(write_doc(rows, load))


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"]:
        prepare(only_group_lasso=sys.argv[2:] == ["group_lasso"])
    else:
        main()
