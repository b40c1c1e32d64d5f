"""Unstructured pruning on Fashion-MNIST: one command, writes docs/unstructured.md + plots.

    .venv/bin/python bench/unstructured.py [--quick]

What it measures, all in one run on this machine:
1. LeNet-300-100 trained dense (15 epochs of Adam), then global L1 magnitude pruning at
   50…99% sparsity with the three schedules (one-shot, iterative, AGP), each with the same
   fine-tuning budget; accuracy against sparsity (table + plot).
2. Parity with ``torch.nn.utils.prune.global_unstructured``: identical masks at the same amount,
   and accuracy after the same fine-tuning budget.
3. The VGG-style CNN at 2:4 semi-structured sparsity after fine-tuning vs dense.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, machine_line, markdown_table, train_dense, write_results  # noqa: E402

import netslim  # noqa: E402
from netslim.core.masks import iter_masks  # noqa: E402
from netslim.data import make_loaders  # noqa: E402
from netslim.schedules import AGPScheduler, iterative_ratios  # noqa: E402
from netslim.training import evaluate, seed_everything, train  # noqa: E402
from netslim.unstructured import Unstructured  # noqa: E402
from netslim.unstructured.nm import check_nm  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
PARITY_SPARSITIES = (0.9, 0.95, 0.98)


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _finetune(
    model: nn.Module, loader, epochs: int, lr: float, on_step=None, teacher: nn.Module | None = None
) -> None:
    # Same batches in the same order for every variant: only the pruning differs.
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(1)
    train(model, loader, epochs=epochs, lr=lr, on_step=on_step, teacher=teacher, progress=False)


def run_lenet(args, train_loader, test_loader) -> dict:
    dense, dense_acc, _ = train_dense(
        "zoo:lenet300", train_loader, test_loader, epochs=args.dense_epochs, label="LeNet-300-100"
    )
    ft = args.finetune_epochs
    lr = args.finetune_lr
    curves: dict[str, dict[float, float]] = {"oneshot": {}, "iterative": {}, "agp": {}}
    for sparsity in args.sparsities:
        config = Unstructured(ratio=sparsity, scope="global", criterion="l1")
        # one-shot: prune once, fine-tune the whole budget
        seed_everything(1)
        model = copy.deepcopy(dense)
        netslim.prune_(model, config)
        _finetune(model, train_loader, ft, lr, teacher=dense)
        curves["oneshot"][sparsity] = evaluate(model, test_loader)
        # iterative: one epoch of fine-tuning after each of `ft` rising pruning steps
        seed_everything(1)
        model = copy.deepcopy(dense)
        for ratio in iterative_ratios(sparsity, ft):
            netslim.prune_(model, Unstructured(ratio=ratio, scope="global", criterion="l1"))
            _finetune(model, train_loader, 1, lr, teacher=dense)
        curves["iterative"][sparsity] = evaluate(model, test_loader)
        # AGP: masks follow the cubic schedule during the same budget
        seed_everything(1)
        model = copy.deepcopy(dense)
        total = len(train_loader) * ft
        scheduler = AGPScheduler(model, config, total_steps=total)
        _finetune(model, train_loader, ft, lr, on_step=scheduler.on_step, teacher=dense)
        curves["agp"][sparsity] = evaluate(model, test_loader)
        print(
            f"  sparsity {sparsity:.2f}: "
            + ", ".join(f"{k} {100 * v[sparsity]:.2f}%" for k, v in curves.items()),
            flush=True,
        )
    # The bars (90% within 0.5 points of dense, 95% within 1.0) with a longer budget: as many
    # fine-tuning epochs as dense training had.
    long_budget: dict[str, dict[float, float]] = {"oneshot": {}, "agp": {}}
    for sparsity in args.bar_sparsities:
        config = Unstructured(ratio=sparsity, scope="global", criterion="l1")
        seed_everything(1)
        model = copy.deepcopy(dense)
        netslim.prune_(model, config)
        _finetune(model, train_loader, args.long_finetune_epochs, lr, teacher=dense)
        long_budget["oneshot"][sparsity] = evaluate(model, test_loader)
        seed_everything(1)
        model = copy.deepcopy(dense)
        total = len(train_loader) * args.long_finetune_epochs
        scheduler = AGPScheduler(model, config, total_steps=total)
        _finetune(
            model,
            train_loader,
            args.long_finetune_epochs,
            lr,
            on_step=scheduler.on_step,
            teacher=dense,
        )
        long_budget["agp"][sparsity] = evaluate(model, test_loader)
        print(
            f"  {args.long_finetune_epochs}-epoch budget, sparsity {sparsity:.2f}: "
            + ", ".join(f"{k} {100 * v[sparsity]:.2f}%" for k, v in long_budget.items()),
            flush=True,
        )
    parity = []
    for sparsity in args.parity:
        seed_everything(1)
        ours = copy.deepcopy(dense)
        # torch's global_unstructured is given every layer, so netslim prunes the classifier too.
        netslim.prune_(
            ours,
            Unstructured(ratio=sparsity, scope="global", criterion="l1", include_classifier=True),
        )
        theirs = copy.deepcopy(dense)
        torch_prune.global_unstructured(
            _prunable(theirs), pruning_method=torch_prune.L1Unstructured, amount=sparsity
        )
        our_masks = iter_masks(ours)
        same = all(
            torch.equal(our_masks[f"{name}.weight"].bool(), module.weight_mask.bool())
            for name, module in theirs.named_modules()
            if hasattr(module, "weight_mask")
        )
        seed_everything(1)
        _finetune(ours, train_loader, ft, lr, teacher=dense)
        seed_everything(1)
        _finetune(theirs, train_loader, ft, lr, teacher=dense)
        parity.append(
            {
                "sparsity": sparsity,
                "masks_identical": same,
                "netslim": evaluate(ours, test_loader),
                "torch_prune": evaluate(theirs, test_loader),
            }
        )
        print(f"  parity {sparsity}: {parity[-1]}", flush=True)
    return {"dense": dense_acc, "curves": curves, "long_budget": long_budget, "parity": parity}


def run_vgg_nm(args, train_loader, test_loader) -> dict:
    dense, dense_acc, _ = train_dense(
        "zoo:vgg_small", train_loader, test_loader, epochs=args.vgg_epochs, label="VGG-small"
    )
    result = {"dense": dense_acc, "patterns": {}}
    for n, m in ((2, 4),):
        seed_everything(1)
        model = copy.deepcopy(dense)
        # The first conv sees one input channel: N:M needs a width divisible by M, so it stays dense.
        netslim.prune_(model, Unstructured(ratio=0.5, nm=(n, m), ignore=("features.0",)))
        oneshot = evaluate(model, test_loader)
        _finetune(model, train_loader, args.vgg_finetune_epochs, args.finetune_lr, teacher=dense)
        holds = all(check_nm(mask.float(), n, m) for mask in iter_masks(model).values())
        result["patterns"][f"{n}:{m}"] = {
            "oneshot": oneshot,
            "finetuned": evaluate(model, test_loader),
            "pattern_holds_after_finetune": holds,
        }
        print(f"  {n}:{m}: {result['patterns'][f'{n}:{m}']}", flush=True)
    return result


def write_docs(results: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lenet = results["lenet"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in lenet["curves"].items():
        xs = sorted(curve)
        ax.plot([100 * x for x in xs], [100 * curve[x] for x in xs], marker="o", label=name)
    ax.axhline(100 * lenet["dense"], color="grey", linestyle="--", label="dense")
    ax.set_xlabel("weights removed (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("LeNet-300-100 on Fashion-MNIST: global magnitude pruning")
    ax.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "unstructured_lenet300.png", dpi=110)
    plt.close(fig)

    dense = lenet["dense"]
    rows = [
        [f"{100 * s:.0f}%"]
        + [f"{100 * lenet['curves'][k][s]:.2f}" for k in ("oneshot", "iterative", "agp")]
        + [f"{100 * (max(lenet['curves'][k][s] for k in lenet['curves']) - dense):+.2f}"]
        for s in sorted(lenet["curves"]["oneshot"])
    ]
    long_rows = [
        [
            f"{100 * s:.0f}%",
            f"{100 * lenet['long_budget']['oneshot'][s]:.2f}",
            f"{100 * lenet['long_budget']['agp'][s]:.2f}",
            f"{100 * (max(v[s] for v in lenet['long_budget'].values()) - dense):+.2f}",
            bar,
        ]
        for s, bar in zip(args.bar_sparsities, ("≤ 0.5 below", "≤ 1.0 below"), strict=True)
    ]
    parity_rows = [
        [
            f"{100 * p['sparsity']:.0f}%",
            "yes" if p["masks_identical"] else "NO",
            f"{100 * p['netslim']:.2f}",
            f"{100 * p['torch_prune']:.2f}",
        ]
        for p in lenet["parity"]
    ]
    vgg = results["vgg"]
    nm_rows = [
        [
            pattern,
            f"{100 * vgg['dense']:.2f}",
            f"{100 * r['oneshot']:.2f}",
            f"{100 * r['finetuned']:.2f}",
            f"{100 * (r['finetuned'] - vgg['dense']):+.2f}",
            "yes" if r["pattern_holds_after_finetune"] else "NO",
        ]
        for pattern, r in vgg["patterns"].items()
    ]
    text = f"""# Unstructured pruning benchmark (Fashion-MNIST)

Generated by `bench/unstructured.py` ({machine_line()}). Settings: dense LeNet-300-100 trained
{args.dense_epochs} epochs (Adam, lr 1e-3, batch 128); every pruned variant gets the same budget of
{args.finetune_epochs} fine-tuning epochs (Adam, lr {args.finetune_lr}, cosine decay, knowledge
distillation from the dense model: the same for netslim and torch prune). Iterative = {args.finetune_epochs}
rising pruning steps with one epoch each; AGP = cubic schedule (Zhu & Gupta 2017) over the budget.

## LeNet-300-100, global L1 magnitude, test accuracy (%) — dense {100 * dense:.2f}%

{markdown_table(["sparsity", "one-shot", "iterative", "AGP", "best − dense (pts)"], rows)}

![accuracy vs sparsity](unstructured_lenet300.png)

## The bars, with a {args.long_finetune_epochs}-epoch fine-tuning budget (as long as dense training)

{markdown_table(["sparsity", "one-shot (%)", "AGP (%)", "best − dense (pts)", "bar"], long_rows)}

## Parity with `torch.nn.utils.prune.global_unstructured` (same amount, same fine-tuning)

{markdown_table(["sparsity", "masks identical", "netslim acc (%)", "torch prune acc (%)"], parity_rows)}

## VGG-style CNN at N:M semi-structured sparsity ({args.vgg_epochs} dense epochs, {args.vgg_finetune_epochs} fine-tuning)

{markdown_table(["pattern", "dense (%)", "one-shot (%)", "fine-tuned (%)", "Δ (pts)", "pattern holds"], nm_rows)}
"""
    (DOCS / "unstructured.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget to check the script runs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.dense_epochs, args.finetune_epochs, args.vgg_epochs, args.vgg_finetune_epochs = (
            1,
            1,
            1,
            1,
        )
        args.sparsities, args.parity, limit = (0.5, 0.9), (0.9,), 4000
        args.bar_sparsities, args.long_finetune_epochs = (0.9, 0.95), 2
    else:
        args.dense_epochs, args.finetune_epochs, args.vgg_epochs, args.vgg_finetune_epochs = (
            15,
            5,
            6,
            2,
        )
        args.sparsities, args.parity, limit = SPARSITIES, PARITY_SPARSITIES, None
        args.bar_sparsities, args.long_finetune_epochs = (0.9, 0.95), 15
    args.finetune_lr = 1e-3
    train_loader, test_loader = make_loaders(
        "fashion-mnist", batch_size=128, limit_train=limit, limit_test=limit
    )
    results = {"machine": machine_line(), "lenet": run_lenet(args, train_loader, test_loader)}
    results["vgg"] = run_vgg_nm(args, train_loader, test_loader)
    if not args.quick:
        write_results("unstructured", results)
        write_docs(results, args)
    print("done", flush=True)


if __name__ == "__main__":
    main()
