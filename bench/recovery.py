"""Accuracy kept for the same cut: layer-wise reconstruction and recovery recipes against one-shot
+ plain fine-tuning, Torch-Pruning and ``torch.nn.utils.prune``. Writes docs/recovery.md and
docs/results/recovery.json.

    .venv/bin/python bench/recovery.py [--quick] [--part lenet quantize vgg resnet56] [--seeds 0 1 2]

Every variant of a part sees the same dense model, the same calibration batches and the same
fine-tuning batches in the same order (the loader's generator is reseeded before each fine-tune),
for each seed (the seed sets the dense model's initialisation and data order).

1. lenet: LeNet-300-100 on Fashion-MNIST, 15 dense epochs (Adam 1e-3), global L1 masks at 95 %
   and 98 % (classifier kept dense, as in docs/unstructured.md), 5 fine-tuning epochs with
   distillation from the dense model (Adam 1e-3, cosine; the budget of docs/unstructured.md).
   Variants: ``torch.nn.utils.prune.global_unstructured`` (masks identical to netslim's plain
   one-shot), netslim with reconstruction, stepwise reconstruction (the mask raised in 4 steps on
   calibration data, each followed by reconstruction), and gradual pruning inside the budget
   (4 prune+reconstruct steps, the learning rate rewound to 1e-3 at each, distillation); then
   the recipe that won on a validation split: LAMP masks (Lee et al. 2021) and fine-tuning at
   lr 1e-2, one-shot or in two steps, with ``torch.nn.utils.prune`` at the same lr beside them;
   and gradual pruning inside the same 5 epochs at that lr (LAMP masks at 80 % before the first
   step, raised along AGP's cubic, ``netslim.schedules.run_agp``; see ``LENET_GRADUAL``).
   Also one-shot at 90 % without fine-tuning.
   quantize: the prune + int8 + compressed artifact: docs/quantize.md's protocol at 95 % (L1),
   LAMP masks at the lowest sparsity that reaches the bar's 40x, and LAMP masks raised gradually
   over the same 40 epochs run as one (see ``ARTIFACT_VARIANTS``).
2. vgg: vgg_small, the protocol of docs/criteria.md (3 dense epochs, global ranking to a MACs
   target, 200 fine-tuning steps, same batches): Torch-Pruning (l2, BN scale) with plain and with
   distilled fine-tuning, netslim plain, netslim with reconstruction + distillation; one-shot at
   2x without fine-tuning, with and without reconstruction.
3. resnet56: the data of docs/layers.md (6000 training / 2000 test images, 3 dense epochs), 2x
   fewer MACs, 2 fine-tuning epochs; Torch-Pruning l2, netslim plain, netslim reconstruct + KD
   (an epoch of ResNet-56 costs minutes on one core: run with ``--seeds 0`` to fit the hour).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DOCS,
    RESULTS,
    Stopwatch,
    git_commit,
    machine_line,
    markdown_table,
    write_results,
)

import netslim  # noqa: E402
from netslim.data import make_loaders  # noqa: E402
from netslim.measure import count_macs  # noqa: E402
from netslim.models.spec import build_model  # noqa: E402
from netslim.schedules import iterative_ratios, run_agp  # noqa: E402
from netslim.structural import Channels  # noqa: E402
from netslim.training import evaluate, seed_everything, train  # noqa: E402
from netslim.unstructured import Unstructured  # noqa: E402

TMP = Path(tempfile.gettempdir()) / "netslim-recovery-bench"


def log(msg: str) -> None:
    print(msg, flush=True)


def _finetune(
    model: nn.Module,
    loader,
    *,
    epochs: int = 1,
    steps: int | None = None,
    lr: float = 1e-3,
    teacher: nn.Module | None = None,
    on_step: Callable[[int], Any] | None = None,
    scheduler: str = "cosine",
    kd_alpha: float = 0.5,
) -> None:
    """Same batches in the same order for every variant: only the pruning and recipe differ."""
    loader.generator.manual_seed(1)
    if epochs and (steps is None or steps > 0):
        train(
            model, loader, epochs=epochs, max_steps=steps, lr=lr, teacher=teacher,
            on_step=on_step, progress=False, scheduler=scheduler, kd_alpha=kd_alpha,
        )  # fmt: skip


def _calibration_from(loader, epochs: int) -> None:
    """Put the loader's sampler where a full run leaves it before every variant: in the last
    epoch of the fine-tuning budget (``epochs``). Variants that reconstruct draw calibration
    batches from the loader, whose order is a function of (seed, epoch) only; without this a
    variant run alone (``--rows``) right after the dense training drew another epoch's batches
    than in the full sequence, where it follows another variant's fine-tuning."""
    loader.sampler.set_epoch(max(epochs, 1) - 1)


def _dense(spec: str, loader, epochs: int, seed: int) -> nn.Module:
    seed_everything(seed)
    loader.generator.manual_seed(100 + seed)
    model = build_model(spec)
    train(model, loader, epochs=epochs, lr=1e-3, progress=False)
    return model


def _try(rows: dict, key: str, fn: Callable[[], dict[str, Any]]) -> None:
    try:
        with Stopwatch() as sw:
            rows[key] = fn()
        rows[key]["seconds"] = round(sw.seconds, 1)
    except Exception as exc:  # noqa: BLE001 - record and go on
        rows[key] = {"error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()


# ---- 1. LeNet-300-100 unstructured -------------------------------------------------------------


def _fc_layers(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every Linear but the classifier: the targets of ``Unstructured`` by default."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [(m, "weight") for m in linears[:-1]]


def _gradual(
    model: nn.Module,
    dense: nn.Module,
    loader,
    config: Unstructured,
    *,
    epochs: int,
    lr: float,
    s_init: float,
    end: float,
    every: int,
    scheduler: str = "cosine",
    kd_alpha: float = 0.5,
) -> None:
    """One distilled fine-tuning of ``epochs`` (lr decaying by ``scheduler``, distillation
    weight ``kd_alpha``) while AGP raises ``config``'s masks from ``s_init`` (applied before
    the first step) to ``config.ratio`` by ``end`` of the steps, every ``every`` steps
    (``netslim.schedules.run_agp``)."""
    total = epochs * len(loader)

    def fit(m: nn.Module, on_step: Callable[[int], Any]) -> None:
        _finetune(
            m, loader, epochs=epochs, lr=lr, teacher=dense, on_step=on_step,
            scheduler=scheduler, kd_alpha=kd_alpha,
        )  # fmt: skip

    run_agp(
        model, config, fit, total_steps=total, update_every=every, s_init=s_init,
        end_step=int(end * total),
    )  # fmt: skip


def _prune_rounds(
    model: nn.Module,
    dense: nn.Module,
    loader,
    config: Unstructured,
    *,
    rounds: int,
    epochs: int,
    lr: float,
) -> None:
    """``rounds`` geometric steps up to ``config.ratio``, each followed by ``epochs`` distilled
    epochs at ``lr`` (docs/quantize.md's protocol)."""
    for ratio in iterative_ratios(config.ratio, rounds):
        netslim.prune_(model, replace(config, ratio=ratio), train_loader=loader, reference=dense)
        _finetune(model, loader, epochs=epochs, lr=lr, teacher=dense)


# The recipe's fine-tuning learning rate (Adam, cosine), chosen on a validation split of the
# training set (the last 10,000 training images held out, seed 0), never on the test set: 95 %
# LAMP masks fine-tuned at 1e-3 / 3e-3 / 5e-3 / 1e-2 / 2e-2 reached 88.39 (L1) / 88.98 / 88.95 /
# 89.20 / 89.05 % there (dense 89.85 %); two prune steps inside the budget 89.34 %.
LENET_HOT_LR = 1e-2

# Gradual pruning inside the same 5 fine-tuning epochs at the hot lr (AGP, Zhu & Gupta 2017):
# LAMP masks at s_init before the first step, raised along the cubic every `every` steps until
# `end` of the steps, then fine-tuned at the final mask (Adam 1e-2 + distillation throughout;
# cosine decay and alpha 0.5 until the screens r6-r9 below chose linear decay and alpha 0.3). Chosen with bench/_recovery_screen.py on the validation split (the last 10,000
# training images held out; loss vs the dense model on it at 95 %, mean of seeds 0 1 2):
# one-shot LAMP (the recipe above) 0.80 pt, one-shot L1 0.67, RigL-style drop/regrow of 30 % of
# the mask every 100 steps 0.72; AGP from 80 % ending at 40 / 50 / 60 / 80 % of the steps 0.33 /
# 0.35 / 0.33 / 0.40, from 85 % ending at 60 % 0.32, from 90 % 0.46, from 50 % 0.53, every 25
# steps 0.47, L1 instead of LAMP 0.40. Screened on seed 0 alone and dropped: AGP from dense
# (0.81 / 1.26 pt ending at 60 / 40 %), distillation alpha 0.9 / 1 or T 2 / 8, no
# distillation, warmup, linear decay, SGD 0.05 / 0.1, EMA of the weights (all 0.77-1.19 against
# 1.00 for the recipe). At 98 % (seed 0) it lost 1.00 pt against 1.71 for one-shot LAMP and
# 1.39 for one-shot L1. Then around that recipe (seeds 0 1 2, sets r6 / r8): lr 5e-3 / 7e-3 /
# 1.5e-2 / 2e-2 0.49 / 0.37 / 0.48 / 0.51 pt against 0.33, T 2 / 8 0.41 / 0.55, distillation
# alpha 0.3 / 0.7 0.32 / 0.31, every 100 steps 0.36, linear lr decay instead of cosine 0.28,
# linear with alpha 0.3 / 0.7 0.17 / 0.32, linear at 7e-3 0.43; dynamic pruning with feedback
# (pruned weights keep training and may return; r7, seed 0) 3.6-5.8. The best three on two more
# dense models (r9, seeds 3 4; mean of seeds 0-4): cosine 0.33, linear 0.30, linear with alpha
# 0.3 0.26 (per seed -0.07 / 0.39 / 0.19 / 0.17 / 0.63: the lowest mean, not a clear winner).
LENET_GRADUAL = {"s_init": 0.8, "end": 0.6, "every": 50, "scheduler": "linear", "kd_alpha": 0.3}


def lenet_variants(args, train_loader) -> dict[str, Callable[[nn.Module, nn.Module, float], float]]:
    """name -> fn(model, dense, sparsity) that prunes + recovers ``model`` in place and returns
    the accuracy right after pruning (before any fine-tuning), or None."""
    ft = args.lenet_ft_epochs

    def torch_prune_ft(model, dense, sp):
        torch_prune.global_unstructured(
            _fc_layers(model), pruning_method=torch_prune.L1Unstructured, amount=sp
        )
        one = evaluate(model, args.test_loader)
        _finetune(model, train_loader, epochs=ft, teacher=dense)
        return one

    def reconstruct_ft(model, dense, sp):
        cfg = Unstructured(ratio=sp, scope="global", reconstruct=True)
        netslim.prune_(model, cfg, train_loader=train_loader)
        one = evaluate(model, args.test_loader)
        _finetune(model, train_loader, epochs=ft, teacher=dense)
        return one

    def stepwise_ft(model, dense, sp):
        # the mask rises in 4 steps on calibration data alone, each step reconstructed: later
        # steps rank weights that already absorbed the earlier removals
        for ratio in iterative_ratios(sp, 4):
            cfg = Unstructured(ratio=ratio, scope="global", reconstruct=True)
            netslim.prune_(model, cfg, train_loader=train_loader, reference=dense)
        one = evaluate(model, args.test_loader)
        _finetune(model, train_loader, epochs=ft, teacher=dense)
        return one

    def gradual_rewind(model, dense, sp):
        # 4 prune+reconstruct steps inside the same budget; each trains with the learning rate
        # rewound to its initial value (Renda et al. 2020) and distillation from the dense model
        one = None
        per_round = [1] * (ft - 1)
        per_round[-1] += 1  # 5 epochs -> 1, 1, 1, 2
        for ratio, epochs in zip(iterative_ratios(sp, len(per_round)), per_round, strict=True):
            cfg = Unstructured(ratio=ratio, scope="global", reconstruct=True)
            netslim.prune_(model, cfg, train_loader=train_loader, reference=dense)
            one = evaluate(model, args.test_loader) if one is None else one
            _finetune(model, train_loader, epochs=epochs, teacher=dense)
        return None

    hot = LENET_HOT_LR

    def torch_prune_hot(model, dense, sp):
        # the peer with the recipe's fine-tuning: what the learning rate alone is worth
        torch_prune.global_unstructured(
            _fc_layers(model), pruning_method=torch_prune.L1Unstructured, amount=sp
        )
        one = evaluate(model, args.test_loader)
        _finetune(model, train_loader, epochs=ft, lr=hot, teacher=dense)
        return one

    def lamp_hot(model, dense, sp):
        cfg = Unstructured(ratio=sp, scope="global", criterion="lamp", reconstruct=False)
        netslim.prune_(model, cfg)
        one = evaluate(model, args.test_loader)
        _finetune(model, train_loader, epochs=ft, lr=hot, teacher=dense)
        return one

    def lamp_two_steps(model, dense, sp):
        # half-way mask for one epoch, then the full mask for the rest of the same budget; the
        # learning rate rewound at each step (Renda et al. 2020), distillation throughout
        one = None
        per_step = [1, ft - 1]
        for ratio, epochs in zip(iterative_ratios(sp, len(per_step)), per_step, strict=True):
            cfg = Unstructured(ratio=ratio, scope="global", criterion="lamp", reconstruct=False)
            netslim.prune_(model, cfg)
            one = evaluate(model, args.test_loader) if one is None else one
            _finetune(model, train_loader, epochs=epochs, lr=hot, teacher=dense)
        return None

    gradual = LENET_GRADUAL

    def lamp_gradual_hot(model, dense, sp):
        # starts from LAMP masks at s_init (one-shot pruning reaches it almost for free) and
        # spends the budget raising the mask slowly while the weights adapt
        cfg = Unstructured(ratio=sp, scope="global", criterion="lamp", reconstruct=False)
        _gradual(model, dense, train_loader, cfg, epochs=ft, lr=hot, **gradual)
        return None

    return {
        "torch.nn.utils.prune + FT": torch_prune_ft,
        "netslim reconstruct + FT": reconstruct_ft,
        "netslim stepwise reconstruct + FT": stepwise_ft,
        "netslim gradual + rewind + KD": gradual_rewind,
        f"torch.nn.utils.prune + FT lr {hot:g}": torch_prune_hot,
        f"netslim LAMP + FT lr {hot:g}": lamp_hot,
        f"netslim LAMP 2 steps + FT lr {hot:g}": lamp_two_steps,
        f"netslim LAMP gradual from {gradual['s_init']:.0%} + FT lr {hot:g}": lamp_gradual_hot,
    }


def _chosen(variants: dict[str, Any], rows: list[str] | None) -> dict[str, Any]:
    """The variants whose name contains one of ``rows`` (all of them without ``--rows``)."""
    if not rows:
        return variants
    return {k: v for k, v in variants.items() if any(r in k for r in rows)}


def _add_rows(previous: dict[str, Any], seeds: list[dict[str, Any]], args) -> dict[str, Any]:
    """``previous`` (a part of the last run) with the rows of this run added to each seed.

    Only sound when this run's dense models are the last run's: the same seeds and the same
    dense accuracy to the last digit (the dense training is deterministic), checked here."""
    if previous.get("seed_ids") != args.seeds:
        raise SystemExit(
            f"--rows: the last run had seeds {previous.get('seed_ids')}, not {args.seeds}"
        )
    merged = copy.deepcopy(previous)
    for old, new in zip(merged["seeds"], seeds, strict=True):
        if old["dense"] != new["dense"]:
            raise SystemExit(
                f"--rows: dense {new['dense']} differs from the last run's {old['dense']}"
            )
        old["rows"].update(new["rows"])
    merged.setdefault("added", []).append(
        {
            "rows": sorted(seeds[0]["rows"]),
            "machine": machine_line(),
            "load": args.load,
            "commit": git_commit(),
        }  # fmt: skip
    )
    return merged


def run_lenet(args, train_loader, test_loader, seed: int) -> dict[str, Any]:
    dense = _dense("zoo:lenet300", train_loader, args.lenet_dense_epochs, seed)
    dense_acc = evaluate(dense, test_loader)
    log(f"[lenet s{seed}] dense {100 * dense_acc:.2f}%")
    out: dict[str, Any] = {"dense": dense_acc, "rows": {}, "oneshot": {}}
    variants = _chosen(lenet_variants(args, train_loader), args.rows)
    for sp in args.lenet_sparsities:
        for name, fn in variants.items():

            def one(fn=fn, sp=sp) -> dict[str, Any]:
                seed_everything(1)
                _calibration_from(train_loader, args.lenet_ft_epochs)
                model = copy.deepcopy(dense)
                pruned = fn(model, dense, sp)
                return {"pruned": pruned, "accuracy": evaluate(model, test_loader)}

            key = f"{sp:.2f} {name}"
            _try(out["rows"], key, one)
            r = out["rows"][key]
            if "accuracy" in r:
                log(f"[lenet s{seed}] {key}: {100 * r['accuracy']:.2f}% ({r['seconds']} s)")
    # one-shot, no fine-tuning, with and without reconstruction (kept from the last run when
    # only some rows are added)
    for sp in () if args.rows else args.oneshot_sparsities:
        _calibration_from(train_loader, args.lenet_ft_epochs)
        plain = copy.deepcopy(dense)
        torch_prune.global_unstructured(
            _fc_layers(plain), pruning_method=torch_prune.L1Unstructured, amount=sp
        )
        rec = copy.deepcopy(dense)
        netslim.prune_(
            rec, Unstructured(ratio=sp, scope="global", reconstruct=True), train_loader=train_loader
        )
        out["oneshot"][f"{sp:.2f}"] = {
            "plain": evaluate(plain, test_loader),
            "reconstruct": evaluate(rec, test_loader),
        }
        log(f"[lenet s{seed}] one-shot {sp}: {out['oneshot'][f'{sp:.2f}']}")
    return out


# (sparsity, criterion, classifier pruned, fine-tuning lr) of each artifact variant. On a
# validation split (the last 10,000 training images, seed 0) LAMP at lr 3e-3 lost 0.28 pt with
# the classifier kept whole and 0.51 with it pruned, against 0.52 for docs/quantize.md's L1 at
# 1e-3; L1 at 3e-3 lost 0.75 and four rounds of LAMP 0.64. Reconstructing every round (1.4 pt
# lost) and the LeNet recipe's lr 1e-2 (the model collapsed) were measured in the run of commit
# 8150853. On the test set (run of 98daa98, 3 seeds) the classifier kept lost 0.59 and LAMP
# 95% with it pruned 0.503 at 42.5x. The bar asks for 40x, not 95%: the LAMP row's sparsity is
# the lowest whose artifact is 40x with a 3% margin, found from the artifact's size alone (on a
# model pruned with these rounds from a 3-epoch dense one, no test image involved: 94.5% gave
# 39.7x, 95% 43.1x).
# The gradual row: the same 40 distilled epochs as one cosine run while AGP raises LAMP masks
# (classifier included) from 80 % to 95 % by 60 % of the steps, every 200 steps (the LeNet
# recipe's LENET_GRADUAL stretched to this budget). Chosen with bench/_recovery_screen.py
# --set q on the validation split (the last 10,000 training images; decoded int8 model's loss
# vs dense, mean of seeds 0 1 2): lr 1e-2 0.21 pt at 42.4x, lr 1e-3 0.33 at 43.1x, against 0.58
# at 41.0x for the LAMP rounds row below; lr 3e-3 (seed 0 alone) 0.37, and the 5-epoch LeNet
# recipe with the classifier pruned 0.68 (seed 0).
ARTIFACT_LR = 1e-2
ARTIFACT_GRADUAL = {"s_init": 0.8, "end": 0.6, "every": 200}
ARTIFACT_VARIANTS = {
    "L1, classifier pruned, lr 1e-3 (docs/quantize.md)": (0.95, "l1", True, 1e-3, "rounds"),
    "LAMP, classifier pruned, lr 3e-3": (0.948, "lamp", True, 3e-3, "rounds"),
    f"LAMP gradual from 80%, classifier pruned, lr {ARTIFACT_LR:g}": (
        0.95,
        "lamp",
        True,
        ARTIFACT_LR,
        "gradual",
    ),
}


def run_quantize(args, train_loader, test_loader, seed: int) -> dict[str, Any]:
    """Prune + int8 + compressed artifact with docs/quantize.md's protocol (15 dense epochs;
    global L1 with the classifier included, 8 geometric prune rounds x 5 distilled epochs; the
    decoded model's accuracy; bytes against the dense float32 artifact), and the same rounds
    with LAMP masks and fine-tuning lr 3e-3, and the same epochs as one run with the masks raised
    gradually (chosen on a validation split of the training set: see ``ARTIFACT_VARIANTS``)."""
    from netslim.compress import compress, decompress

    dense = _dense("zoo:lenet300", train_loader, args.lenet_dense_epochs, seed)
    dense_acc = evaluate(dense, test_loader)
    log(f"[quantize s{seed}] dense {100 * dense_acc:.2f}%")
    TMP.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    for name, (sp, criterion, classifier, lr, schedule) in _chosen(
        ARTIFACT_VARIANTS, args.rows
    ).items():
        seed_everything(1)
        model = copy.deepcopy(dense)
        cfg = Unstructured(
            ratio=sp, scope="global", criterion=criterion, include_classifier=classifier,
            reconstruct=False,
        )  # fmt: skip
        if schedule == "gradual":  # the same epochs as one run instead of 8 restarts
            epochs = args.artifact_rounds * args.lenet_ft_epochs
            _gradual(model, dense, train_loader, cfg, epochs=epochs, lr=lr, **ARTIFACT_GRADUAL)
        else:
            _prune_rounds(
                model, dense, train_loader, cfg, rounds=args.artifact_rounds,
                epochs=args.lenet_ft_epochs, lr=lr,
            )  # fmt: skip
        float_acc = evaluate(model, test_loader)
        path = TMP / f"lenet-{seed}-{sp}-{criterion}-{classifier}-{lr:g}-{schedule}.nsz"
        report = compress(model, path, values="int8")
        acc = evaluate(decompress(path), test_loader)
        key = f"{sp:g} {name}"
        rows[key] = {"bytes": report.bytes, "ratio": report.ratio, "accuracy": acc,
                     "float_accuracy": float_acc}  # fmt: skip
        log(f"[quantize s{seed}] {key}: {report.ratio:.1f}x, {100 * acc:.2f}%")
    return {"dense": dense_acc, "rows": rows}


# ---- 2./3. structured: vgg_small and resnet56 ---------------------------------------------------


def _tp(dense: nn.Module, example, keep: float, importance: str) -> nn.Module:
    from _peers import tp_prune_to_macs

    model, _ = tp_prune_to_macs(
        copy.deepcopy(dense), example, keep, num_outputs=10, importance=importance
    )
    return model


def _netslim_channels(dense, example, keep, loader, *, reconstruct: bool, criterion: str):
    model = copy.deepcopy(dense)
    cfg = Channels(criterion=criterion, target_macs=keep, scope="global", reconstruct=reconstruct)
    netslim.prune_(model, cfg, example_inputs=example, train_loader=loader)
    return model


def run_structured(
    args, spec: str, train_loader, test_loader, seed: int, *, dense_epochs: int, budget: dict
) -> dict[str, Any]:
    """``budget``: ``{"steps": N}`` or ``{"epochs": N}`` of fine-tuning, the same for all."""
    example = torch.randn(1, 1, 28, 28)
    dense = _dense(spec, train_loader, dense_epochs, seed)
    dense_acc = evaluate(dense, test_loader)
    base_macs = count_macs(dense, (example,))
    log(f"[{spec} s{seed}] dense {100 * dense_acc:.2f}%")
    out: dict[str, Any] = {"dense": dense_acc, "rows": {}, "oneshot": {}}
    crit = args.channel_criterion
    steps = budget.get("steps")
    epochs = budget.get("epochs", 1)

    def finish(model: nn.Module, teacher: nn.Module | None) -> dict[str, Any]:
        pruned = evaluate(model, test_loader)
        _finetune(model, train_loader, epochs=epochs, steps=steps, teacher=teacher)
        macs = count_macs(model, (example,)) / base_macs
        return {"pruned": pruned, "accuracy": evaluate(model, test_loader), "macs": macs}

    for r in budget["reductions"]:
        keep = 1 / r
        variants: dict[str, Callable[[], dict[str, Any]]] = {}
        for imp in args.tp_importance if budget.get("peers_kd") else args.tp_importance[:1]:
            variants[f"tp-{imp} + FT"] = lambda imp=imp, keep=keep: finish(
                _tp(dense, example, keep, imp), None
            )
            if budget.get("peers_kd"):
                variants[f"tp-{imp} + KD FT"] = lambda imp=imp, keep=keep: finish(
                    _tp(dense, example, keep, imp), dense
                )
        variants[f"netslim {crit} + FT"] = lambda keep=keep: finish(
            _netslim_channels(
                dense, example, keep, train_loader, reconstruct=False, criterion=crit
            ),
            None,
        )
        variants[f"netslim {crit} reconstruct + KD FT"] = lambda keep=keep: finish(
            _netslim_channels(dense, example, keep, train_loader, reconstruct=True, criterion=crit),
            dense,
        )
        for name, fn in variants.items():
            key = f"{r}x {name}"
            seed_everything(1)
            _calibration_from(train_loader, epochs)
            _try(out["rows"], key, fn)
            row = out["rows"][key]
            if "accuracy" in row:
                log(
                    f"[{spec} s{seed}] {key}: {100 * row['accuracy']:.2f}% "
                    f"(pruned {100 * row['pruned']:.2f}%, MACs {row['macs']:.3f}, {row['seconds']} s)"
                )
    for r in budget.get("oneshot", ()):
        _calibration_from(train_loader, epochs)
        res = {}
        for rec in (False, True):
            model = _netslim_channels(
                dense, example, 1 / r, train_loader, reconstruct=rec, criterion=crit
            )
            res["reconstruct" if rec else "plain"] = evaluate(model, test_loader)
        out["oneshot"][f"{r}x"] = res
        log(f"[{spec} s{seed}] one-shot {r}x: {res}")
    return out


# ---- report ------------------------------------------------------------------------------------


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def _at(run: dict[str, Any]) -> str:
    """``, commit abc1234`` for runs that recorded it (earlier runs did not)."""
    return f", commit {run['commit']}" if run.get("commit") else ""


def _run_line(part: dict[str, Any]) -> str:
    """``Run: <machine>; seeds [...]`` with the 1-minute load average around the part, if kept."""
    load = part.get("load")
    around = (
        f"; 1-minute load average {load[0]:.2f} at the start, {load[1]:.2f} at the end"
        if load
        else ""
    )
    line = f"Run: {part['machine']}{_at(part)}{around}; seeds {part['seed_ids']}."
    runs = part.get("added", [])
    for i, added in enumerate(runs):  # a row re-run later is named only under its last run
        later = {k for run in runs[i + 1 :] for k in run["rows"]}
        rows = [k for k in added["rows"] if k not in later]
        if not rows:
            continue
        names = ", ".join(f"'{k}'" for k in rows)
        load = added["load"]
        line += (
            f" Rows {names} added by a later run (`--rows`, same seeds and dense models): "
            f"{added['machine']}{_at(added)}; 1-minute load average {load[0]:.2f} at the start, "
            f"{load[1]:.2f} at the end."
        )
    return line


def _mean(values: list[float]) -> float:
    return 100 * statistics.fmean(values) if values else float("nan")


def _collect(part: list[dict[str, Any]], key: str, field: str = "accuracy") -> list[float]:
    return [s["rows"][key][field] for s in part if field in s["rows"].get(key, {})]


def _variant_table(part: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    dense = [s["dense"] for s in part]
    keys = list(dict.fromkeys(k for s in part for k in s["rows"]))
    keys.sort(key=lambda k: k.split()[0])  # by sparsity / reduction; rows added later join theirs
    rows, means = [], {}
    for k in keys:
        acc = _collect(part, k)
        pruned = [
            s["rows"][k]["pruned"] for s in part if s["rows"].get(k, {}).get("pruned") is not None
        ]
        macs = _collect(part, k, "macs")
        loss = [d - a for d, a in zip(dense, acc, strict=False)] if len(acc) == len(dense) else []
        means[k] = _mean(acc)
        errors = [s["rows"][k]["error"][:50] for s in part if "error" in s["rows"].get(k, {})]
        rows.append(
            [
                k,
                _stats(pruned),
                _stats(acc) if acc else (errors[0] if errors else "-"),
                f"{_mean(loss):.2f}" if loss else "-",
                f"{statistics.fmean(macs):.3f}" if macs else "",
            ]
        )
    head = ["variant", "right after pruning %", "fine-tuned %", "loss vs dense (pts)", "MACs"]
    return markdown_table(head, rows), means


def write_docs(
    results: dict[str, Any], args, target: Path = DOCS / "recovery.md"
) -> list[tuple[str, str, str]]:
    lines = [
        "# Recovery: keeping accuracy for the same cut",
        "",
        "`bench/recovery.py` (parts run separately under one CPU slot each; every part states "
        "its own run). Accuracies are means ± standard deviation over the seeds; each seed "
        "trains its own dense model, and every variant of that seed starts from it with the "
        "same calibration batches (8 of the training loader, labels unused) and the same "
        "fine-tuning batches in the same order.",
        "",
        "API: `Channels(..., reconstruct=True)`, `Unstructured(..., reconstruct=True)` with "
        "`prune_(model, cfg, train_loader=loader)`; CLI `netslim prune ... --reconstruct` (the "
        "report prints the accuracy right after pruning beside the fine-tuned one). "
        "Reconstruction: layers refitted in forward order against the dense model's outputs "
        "(the inputs come from the pruned model, so each solve also absorbs the error from "
        "below); channel pruning refits every consumer of a pruned channel group by ridge "
        "least squares (convolutions unfolded, ≤ 4096 positions per batch) and re-estimates "
        "BatchNorm; masks get the exact optimal-brain-surgeon update of each row's surviving "
        "weights (OBC), masks unchanged.",
        "",
    ]
    bars: list[tuple[str, str, str]] = []
    lenet_summary: tuple[dict[str, float], float] = ({}, float("nan"))
    artifacts: dict[str, tuple[float, float, float]] = {}  # row -> (x smaller, pt lost, float %)
    lenet = results.get("lenet")
    if lenet:
        seeds = lenet["seeds"]
        dense = [s["dense"] for s in seeds]
        table, means = _variant_table(seeds)
        lines += [
            "## LeNet-300-100, Fashion-MNIST, global masks (L1; LAMP where named)",
            "",
            f"{_run_line(lenet)} Dense {_stats(dense)}% ({lenet['settings']}).",
            "",
            table,
            "",
        ]
        d = _mean(dense)
        lenet_summary = (means, d)
        for sp, bar in (("0.95", 0.5), ("0.98", 2.0)):
            best = max(
                ((k, v) for k, v in means.items() if k.startswith(sp) and "netslim" in k),
                key=lambda kv: kv[1],
                default=(None, float("nan")),
            )
            loss = d - best[1]
            bars.append(
                (
                    f"LeNet-300-100 {float(sp):.0%} global, 5 FT epochs: loses ≤ {bar} pt",
                    f"{loss:.2f} pt ({best[0]})",
                    "met" if loss <= bar else f"MISSED by {loss - bar:.2f} pt",
                )
            )
        one = []
        for sp in lenet["seeds"][0]["oneshot"]:
            plain = [s["oneshot"][sp]["plain"] for s in seeds]
            rec = [s["oneshot"][sp]["reconstruct"] for s in seeds]
            closed = (_mean(rec) - _mean(plain)) / max(d - _mean(plain), 1e-9)
            one.append([f"{float(sp):.0%}", _stats(plain), _stats(rec), f"{100 * closed:.0f}%"])
            bars.append(
                (
                    f"LeNet-300-100 {float(sp):.0%} one-shot: ≥ half the gap to dense closed",
                    f"{100 * closed:.0f}% closed ({_mean(plain):.2f} → {_mean(rec):.2f}, dense {d:.2f})",
                    "met" if closed >= 0.5 else "MISSED",
                )
            )
        lines += [
            "One-shot, no fine-tuning (`torch.nn.utils.prune` masks = netslim's plain masks):",
            "",
            markdown_table(["sparsity", "plain %", "reconstructed %", "gap to dense closed"], one),
            "",
        ]
    quant = results.get("quantize")
    if quant:
        seeds = quant["seeds"]
        d = _mean([s["dense"] for s in seeds])
        art = []
        for key in seeds[0]["rows"]:
            ratio = statistics.fmean(s["rows"][key]["ratio"] for s in seeds)
            acc = [s["rows"][key]["accuracy"] for s in seeds]
            floats = [s["rows"][key].get("float_accuracy") for s in seeds]
            loss = d - _mean(acc)
            artifacts[key] = (ratio, loss, _mean(floats) if None not in floats else math.nan)
            art.append([key, f"{ratio:.1f}x", _stats(floats) if None not in floats else "-",
                        _stats(acc), f"{loss:.2f}"])  # fmt: skip
        # one bar: the variant with the least loss among those 40x smaller (else the smallest);
        # every variant stands in the artifact table
        key, (ratio, loss, _) = min(
            artifacts.items(),
            key=lambda kv: (kv[1][0] < 40, kv[1][1] if kv[1][0] >= 40 else -kv[1][0]),
        )
        bars.append(
            (
                "LeNet-300-100 prune + int8 + compressed: ≥ 40x at ≤ 0.5 pt",
                f"{ratio:.1f}x at {loss:.3f} pt ({key})",
                "met" if ratio >= 40 and loss <= 0.5 else "MISSED",
            )
        )
        lines += [
            "## LeNet-300-100: prune + int8 + compressed artifact",
            "",
            f"{_run_line(quant)} Dense "
            f"{_stats([s['dense'] for s in seeds])}% ({quant['settings']}). Values int8 "
            "(`netslim.compress`, one scale per tensor); accuracy of the model decoded from the "
            "artifact; size against the dense float32 artifact, as in docs/quantize.md.",
            "",
            markdown_table(
                [
                    "sparsity, variant",
                    "smaller",
                    "float accuracy %",
                    "decoded int8 accuracy %",
                    "loss (pts)",
                ],
                art,
            ),
            "",
        ]
    for name, title in (("vgg", "vgg_small"), ("resnet56", "resnet56")):
        part = results.get(name)
        if not part:
            continue
        seeds = part["seeds"]
        dense = [s["dense"] for s in seeds]
        table, means = _variant_table(seeds)
        d = _mean(dense)
        lines += [
            f"## {title}, Fashion-MNIST, channels removed to a MACs target",
            "",
            f"{_run_line(part)} Dense {_stats(dense)}% ({part['settings']}).",
            "",
            table,
            "",
        ]
        for r in part["reductions"]:
            ours = {k: v for k, v in means.items() if k.startswith(f"{r}x netslim")}
            peers = {k: v for k, v in means.items() if k.startswith(f"{r}x tp-")}
            if not ours:
                continue
            best_k, best = max(ours.items(), key=lambda kv: kv[1])
            if name == "vgg" and peers:
                peer_k, peer = max(peers.items(), key=lambda kv: kv[1])
                need = {4: 0.5, 8: 1.0}.get(r)
                if need is not None:
                    gain = best - peer
                    bars.append(
                        (
                            f"vgg_small {r}x, 200 steps: ≥ best Torch-Pruning + {need} pt",
                            f"{gain:+.2f} pt ({best:.2f} vs {peer_k} {peer:.2f})",
                            "met" if gain >= need else f"MISSED by {need - gain:.2f} pt",
                        )
                    )
            if name == "resnet56":
                gap = d - best
                bars.append(
                    (
                        f"resnet56 {r}x, ≤ 2 FT epochs: within 0.5 pt of dense",
                        f"{gap:.2f} pt below dense ({best_k})",
                        "met" if gap <= 0.5 else f"MISSED by {gap - 0.5:.2f} pt",
                    )
                )
        one = []
        for r, _ in seeds[0]["oneshot"].items():
            plain = [s["oneshot"][r]["plain"] for s in seeds]
            rec = [s["oneshot"][r]["reconstruct"] for s in seeds]
            closed = (_mean(rec) - _mean(plain)) / max(d - _mean(plain), 1e-9)
            one.append([r, _stats(plain), _stats(rec), f"{100 * closed:.0f}%"])
            bars.append(
                (
                    f"{title} {r} one-shot: ≥ half the gap to dense closed",
                    f"{100 * closed:.0f}% closed ({_mean(plain):.2f} → {_mean(rec):.2f}, dense {d:.2f})",
                    "met" if closed >= 0.5 else "MISSED",
                )
            )
        if one:
            lines += [
                "One-shot, no fine-tuning:",
                "",
                markdown_table(["MACs cut", "plain %", "reconstructed %", "gap closed"], one),
                "",
            ]
    if "resnet56" not in results:
        bars.append(
            (
                "resnet56 2x, ≤ 2 FT epochs: within 0.5 pt of dense",
                "not measured: the part did not get a CPU slot before the deadline",
                "NOT MEASURED",
            )
        )
    lines += ["## The bars of issue #16", "", markdown_table(["bar", "measured", ""], bars), ""]
    lines += findings(*lenet_summary, artifacts, results.get("vgg"))
    target.write_text("\n".join(lines))
    return bars


def findings(
    means: dict[str, float],
    dense: float,
    artifacts: dict[str, tuple[float, float, float]],
    vgg: dict[str, Any] | None,
) -> list[str]:
    """The closing section, its figures taken from this run: the LeNet means, the artifacts'
    (x smaller, pt lost, float accuracy %) per row and the vgg rows' MACs."""

    def artifact(prefix: str) -> tuple[float, float, float]:
        return next((v for k, v in artifacts.items() if k.startswith(prefix)), (math.nan,) * 3)

    lamp, gradual = artifact("0.948 LAMP"), artifact("0.95 LAMP gradual")
    rounds_float = (
        max(v[2] for k, v in artifacts.items() if "gradual" not in k) if artifacts else math.nan
    )
    figures = {
        "{gradual}": _gradual_finding(means, dense),
        "{artifact_lamp}": f"{lamp[0]:.1f}x at {lamp[1]:.3f} pt lost",
        "{vgg_macs}": _macs_finding(vgg),
        "{artifact_gradual}": f"{gradual[0]:.1f}x at {gradual[1]:.2f} pt lost, the float model "
        f"{gradual[2] - rounds_float:.2f} pt above the better rounds row",
    }
    lines = []
    for line in FINDINGS:
        for key, value in figures.items():
            line = line.replace(key, value)
        lines.append(line)
    return lines


def _macs_finding(vgg: dict[str, Any] | None) -> str:
    """Torch-Pruning's and netslim's MACs fractions at 4x / 8x, and what that does to the
    comparison (the peers cannot be put at exactly the same MACs)."""

    def macs(prefix: str) -> float:
        seeds = (vgg or {}).get("seeds", [])
        values = [r["macs"] for s in seeds for k, r in s["rows"].items() if k.startswith(prefix)]
        return statistics.fmean(values) if values else math.nan

    tp, ours = [macs(f"{x} tp") for x in ("4x", "8x")], [macs(f"{x} netslim") for x in ("4x", "8x")]

    def share(x: int) -> str:
        diff = 100 * (ours[x] / tp[x] - 1)
        return f"{abs(diff):.0f} % {'more' if diff > 0 else 'fewer'} MACs"

    return (
        f"The MACs of Torch-Pruning's rows come from its uniform-ratio search ({tp[0]:.3f} / "
        f"{tp[1]:.3f} of the dense MACs); netslim's global ranking lands at {ours[0]:.3f} / "
        f"{ours[1]:.3f}: the 8x comparison gives netslim about {share(1)}, the 4x one {share(0)}."
    )


def _gradual_finding(means: dict[str, float], dense: float) -> str:
    def loss(sp: str, prefix: str) -> float:
        hits = [v for k, v in means.items() if k.startswith(f"{sp} {prefix}")]
        return dense - hits[0] if hits else float("nan")

    g95, g98 = (loss(sp, "netslim LAMP gradual") for sp in ("0.95", "0.98"))
    best95, best98 = (
        min((dense - v for k, v in means.items() if k.startswith(sp)), default=math.nan)
        for sp in ("0.95", "0.98")
    )
    best = (
        "the best row at both sparsities"
        if (g95, g98) == (best95, best98)
        else (f"against the best rows' {best95:.2f} / {best98:.2f} pt")
    )
    status = "met" if g95 <= 0.5 else f"MISSED by {g95 - 0.5:.3f} pt"
    return (
        "Gradual pruning inside the same 5 epochs at that lr (LAMP masks at 80 % before the "
        "first step, raised along AGP's cubic to the target by 60 % of the steps, every 50 "
        "steps: `run_agp(..., s_init=0.8)`, on the command line `--schedule agp --agp-start "
        "0.8`; lr decaying linearly, distillation weight 0.3; "
        "chosen on the validation split, see `LENET_GRADUAL`) loses "
        f"{g95:.2f} pt at 95 % (one-shot LAMP {loss('0.95', 'netslim LAMP + FT'):.2f}) and "
        f"{g98:.2f} at 98 % ({loss('0.98', 'torch.nn.utils.prune + FT lr'):.2f} for "
        f"`torch.nn.utils.prune` at lr 1e-2), {best}. It lost 0.26 pt on the validation split "
        f"(mean of 5 seeds; 0.33 for the cosine, alpha 0.5 recipe it replaced, which lost 0.513 "
        f"pt on the test set in the run of 489aa03); on the test set the mean is {g95:.3f} pt: "
        f"the 95 % bar is {status}."
    )


FINDINGS = [
    "## What wins, and the defaults",
    "",
    "- Channel pruning: reconstruction is the difference. Right after pruning it keeps most of "
    "the dense accuracy where plain removal collapses to near chance, and the advantage "
    "survives the short fine-tuning budget (the tables above). Distillation alone "
    "does not explain it: Torch-Pruning with the same distilled fine-tuning is no better than "
    "with plain fine-tuning. `netslim prune --method channel|slimming` and `prune_(model, "
    "Channels(...), train_loader=loader)` therefore reconstruct by default (with calibration "
    "data; `--no-reconstruct` / `reconstruct=False` turns it off).",
    "- Unstructured masks: reconstruction (the exact OBS update per row) turns a collapsed "
    "one-shot model into a usable one, so `--method unstructured` with `--finetune-epochs 0`, "
    "and `prune_` with a loader (it never fine-tunes), reconstruct by default. After 5 distilled epochs every recipe lands within a few tenths "
    "of a point of plain one-shot + fine-tuning (the fine-tuning forgets the starting point); "
    "gradual pruning with learning-rate rewinding inside the same budget was no better. "
    "What moves the fine-tuned accuracy is the fine-tuning itself: at lr 1e-2 instead of 1e-3 "
    "(chosen on a validation split of the training set, see `LENET_HOT_LR`) every mask gains "
    "0.8-2.3 pt. LAMP masks add 0.2 pt at 95 % and lose 0.2 pt at 98 % against global L1 at "
    "that lr; `torch.nn.utils.prune`'s masks (identical to netslim's global L1) fine-tuned the "
    "same way beat one-shot LAMP at 98 %. {gradual} Rising from dense inside the budget was "
    "worse on the validation split "
    "(AGP from 0 at lr 1e-2, 0.81-1.26 pt on seed 0), as was RigL-style drop/regrow at a fixed "
    "95 % (0.72) and dynamic pruning with feedback (3.6-5.8 pt on seed 0): the gain comes from "
    "starting the curve at a sparsity that one-shot pruning reaches almost for free and spending the steps on the last part of the climb. The rows "
    "`netslim gradual + rewind + KD` were re-run by the run that added the gradual rows (their "
    "name matches `--rows gradual`) and at 95 % the seeds moved by up to 0.28 pt: run alone "
    "right after the dense training, they drew their calibration batches in another sampler "
    "epoch than in the full run. Every variant now starts in the epoch the full run leaves "
    "(`_calibration_from`), and re-run that way (`--rows rewind`) the rows reproduce the full "
    "run's accuracies to the digit. The CLI "
    "keeps lr 1e-3 as its fine-tuning default: the higher rate was measured on this one MLP "
    "only, and Adam at 1e-2 is too hot for most convolutional nets. With "
    "docs/quantize.md's long schedule (8 prune rounds x 5 distilled epochs) reconstructing "
    "every round even hurt (1.4 pt lost against 0.6 plain): fine-tuning from weights refitted "
    "on 8 calibration batches ends lower. So unstructured pruning followed by fine-tuning is "
    "left unreconstructed by default.",
    "- One default for the API and the CLI: `reconstruct=None` (auto) in `Channels` and "
    "`Unstructured` and an absent `--reconstruct` resolve through one rule, "
    "`netslim.reconstruct.auto_reconstruct`: channel/slimming reconstruct whenever calibration "
    "batches are given (`train_loader=` or `--data`), unstructured when they are given and no "
    "fine-tuning follows in the same call (a `PruningSession` inside a training loop counts as "
    "fine-tuning). `reconstruct=True` without data is an error.",
    "- int8 artifact: the criterion, classifier and lr were chosen on a validation split (see "
    "`ARTIFACT_VARIANTS`); the LAMP row's sparsity (94.8 %) is the lowest whose artifact is 40x "
    "with a 3 % margin, found from the artifact's size alone (the bar fixes the size, not the "
    "sparsity). It did not help: {artifact_lamp}, against 42.5x at 0.503 pt at 95 % in the "
    "run of 98daa98 (same seeds, dense models and rounds). A 0.2 pt lower sparsity is lost in "
    "the spread of this 8-round recipe, about 0.15 pt between neighbouring settings, and that "
    "row stays above 0.5 pt. In the run of commit 8150853, fine-tuning the 8 rounds at the LeNet "
    "recipe's lr 1e-2 collapsed the float model, and reconstructing every round lost 1.4 pt; "
    "both were dropped. The int8 step itself costs almost nothing here: compare the float and "
    "the decoded columns. The gradual row meets the bar: the same 40 distilled epochs run as one "
    "cosine schedule while AGP raises LAMP masks (classifier included) from 80 % to 95 % "
    "(`ARTIFACT_GRADUAL`; lr 1e-2 chosen on the validation split, where it lost 0.21 pt against "
    "0.33 at 1e-3 and 0.58 for the LAMP rounds) gives {artifact_gradual}. The lr 1e-2 that collapsed the 8 rounds (restarted after "
    "each prune step) is fine annealed once over the whole run.",
    "- resnet56: the protocol's dense model (3 epochs on 6,000 images, docs/layers.md) is "
    "not trained to convergence, so the 2 fine-tuning epochs after pruning also add training: "
    "the reconstructed + distilled model ends above the dense one, while Torch-Pruning and "
    "netslim without reconstruction, with the same 2 epochs, end below it. The bar (within "
    "0.5 pt of dense) is met, but read it with that in mind.",
    "- {vgg_macs}",
    "",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget to check the script runs")
    parser.add_argument("--part", nargs="+", default=["lenet", "quantize", "vgg", "resnet56"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report-only", action="store_true", help="re-render docs from the JSON")
    parser.add_argument(
        "--rows",
        nargs="+",
        help="lenet / quantize: run only the variants whose name contains one of these and add "
        "them to the last run's results (same seeds; the dense models are checked to match)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # one CPU slot
    q = args.quick
    args.lenet_dense_epochs, args.lenet_ft_epochs = (1, 2) if q else (15, 5)
    args.lenet_sparsities = (0.95,) if q else (0.95, 0.98)
    args.oneshot_sparsities = (0.9,)
    args.artifact_rounds = 2 if q else 8
    args.tp_importance = ("l2",) if q else ("l2", "bn")
    args.channel_criterion = "l2"
    limit = 2000 if q else None
    previous = RESULTS / "recovery.json"
    results: dict[str, Any] = {}
    if previous.exists() and not q:  # a run of some parts keeps the others from the last run
        results = json.loads(previous.read_text())
    if not args.report_only:
        for part in args.part:
            if part == "resnet56":
                train_loader, test_loader = make_loaders(
                    "fashion-mnist",
                    batch_size=128,
                    limit_train=1000 if q else 6000,
                    limit_test=500 if q else 2000,
                    seed=0,
                )
            else:
                train_loader, test_loader = make_loaders(
                    "fashion-mnist", batch_size=128, limit_train=limit, limit_test=limit
                )
            args.test_loader = test_loader
            load_before = os.getloadavg()[0]
            seeds = []
            for seed in args.seeds:
                if part == "lenet":
                    seeds.append(run_lenet(args, train_loader, test_loader, seed))
                    settings = (
                        f"{args.lenet_dense_epochs} dense epochs, {args.lenet_ft_epochs} "
                        "fine-tuning epochs with distillation, Adam 1e-3 cosine, batch 128"
                    )
                elif part == "quantize":
                    seeds.append(run_quantize(args, train_loader, test_loader, seed))
                    settings = (
                        f"{args.lenet_dense_epochs} dense epochs; global masks, "
                        f"{args.artifact_rounds} geometric prune rounds x {args.lenet_ft_epochs} "
                        "distilled epochs (Adam, cosine) as docs/quantize.md; criterion, "
                        "classifier and lr per row"
                    )
                elif part == "vgg":
                    budget = {
                        "steps": 5 if q else 200,
                        "reductions": (4, 8),
                        "oneshot": (2,),
                        "peers_kd": True,
                    }
                    seeds.append(
                        run_structured(
                            args, "zoo:vgg_small", train_loader, test_loader, seed,
                            dense_epochs=1 if q else 3, budget=budget,
                        )
                    )  # fmt: skip
                    settings = (
                        f"{1 if q else 3} dense epochs; {budget['steps']} fine-tuning steps, "
                        "Adam 1e-3 cosine, batch 128, as docs/criteria.md"
                    )
                elif part == "resnet56":
                    budget = {"epochs": 1 if q else 2, "reductions": (2,)}
                    seeds.append(
                        run_structured(
                            args, "zoo:resnet56", train_loader, test_loader, seed,
                            dense_epochs=1 if q else 3, budget=budget,
                        )
                    )  # fmt: skip
                    settings = (
                        "6000 training / 2000 test images, 3 dense epochs as docs/layers.md; "
                        f"{budget['epochs']} fine-tuning epochs, Adam 1e-3 cosine"
                    )
                else:
                    parser.error(f"unknown part {part!r}")
            if previous.exists() and not q:  # another part may have finished meanwhile
                results = json.loads(previous.read_text())
            args.load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            if args.rows and part in ("lenet", "quantize") and part in results:
                results[part] = _add_rows(results[part], seeds, args)
                if not q:
                    write_results("recovery", results)
                continue
            results[part] = {
                "machine": machine_line(),
                "commit": git_commit(),
                "seed_ids": args.seeds,
                "settings": settings,
                "seeds": seeds,
                "reductions": [2] if part == "resnet56" else [4, 8],
                # accuracy does not depend on it; the rows' seconds do (shared machine)
                "load": args.load,
            }
            if not q:
                write_results("recovery", results)
    target = TMP / "recovery.md" if q else DOCS / "recovery.md"
    TMP.mkdir(parents=True, exist_ok=True)
    for bar in write_docs(results, args, target):
        log(" | ".join(bar))


if __name__ == "__main__":
    main()
