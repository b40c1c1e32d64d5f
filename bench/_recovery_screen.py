"""The validation screen behind bench/recovery.py's LeNet-300-100 recipes (``LENET_GRADUAL``,
``ARTIFACT_VARIANTS``): recipes are chosen here, on the last 10,000 training images of
Fashion-MNIST held out, never on the test set.

    .venv/bin/python bench/_recovery_screen.py --set r3 --seed 0 [--only NAME ...]

Each seed trains its dense model on the first 50,000 training images (15 epochs, Adam 1e-3,
as bench/recovery.py; cached under the temporary directory) and every recipe of a set starts
from it, fine-tunes 5 epochs on the same batches in the same order and is scored on the held-out
images. ``loop`` is :func:`netslim.training.train` written out (Adam, step-wise cosine,
distillation ``(1 - alpha) CE + alpha T² KL``; identical accuracy on the plain recipe) so the
learning-rate shape, optimizer, EMA and mask-update hooks can vary. Sets: r1 (seed 0, wide),
r2 (seed 0, around the AGP and RigL winners), r3 / r4 (seeds 0 1 2), r5 (98 %), r6 / r8
(seeds 0 1 2: lr, distillation and decay around the AGP recipe), r7 (dynamic pruning with
feedback), r9 (seeds 3 4: the best three), q (the int8 artifact, 40 fine-tuning epochs each). Lines go to stdout and, as JSON, to ``res_<set>.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from recovery import _gradual, _prune_rounds  # bench/: the recipes this screen chose
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

import netslim
from netslim.compress import compress, decompress
from netslim.core.masks import attach_mask, get_mask, sparsity_report
from netslim.data.base import ImageDataset
from netslim.data.datasets import load_dataset
from netslim.data.sampler import ResumableSampler
from netslim.models.spec import build_model
from netslim.schedules import AGPScheduler
from netslim.training import evaluate, seed_everything, train
from netslim.unstructured import Unstructured

OUT = Path(tempfile.gettempdir()) / "netslim-recovery-screen"
HELD_OUT = 10_000


def loaders(batch: int = 128) -> tuple[DataLoader, DataLoader]:
    """(train, validation): the first 50,000 training images and the last 10,000."""
    full = load_dataset("fashion-mnist", "train")
    x, y = full.tensors
    cut = len(y) - HELD_OUT
    train_set = ImageDataset(x[:cut], y[:cut], full.info)
    val_set = ImageDataset(x[cut:], y[cut:], full.info)
    sampler = ResumableSampler(train_set, num_replicas=1, rank=0, seed=0)
    generator = torch.Generator().manual_seed(0)
    return (
        DataLoader(train_set, batch_size=batch, sampler=sampler, generator=generator),
        DataLoader(val_set, batch_size=128, shuffle=False),
    )


def dense_model(seed: int, loader: DataLoader) -> nn.Module:
    """bench/recovery.py's ``_dense`` on the 50,000 images, cached per seed."""
    path = OUT / f"dense{seed}.pt"
    if path.exists():
        model = build_model("zoo:lenet300")
        model.load_state_dict(torch.load(path))
        return model
    seed_everything(seed)
    loader.generator.manual_seed(100 + seed)
    model = build_model("zoo:lenet300")
    train(model, loader, epochs=15, lr=1e-3, progress=False)
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def masks(model: nn.Module, ratio: float, criterion: str = "lamp", scope: str = "global") -> None:
    cfg = Unstructured(ratio=ratio, scope=scope, criterion=criterion, reconstruct=False)
    netslim.prune_(model, cfg)


def sparsity(model: nn.Module) -> float:
    return sparsity_report(model)["overall"]["sparsity"]


Hook = Callable[[int, nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], None]


def loop(
    model: nn.Module,
    loader: DataLoader,
    *,
    teacher: nn.Module,
    epochs: int = 5,
    lr: float = 1e-2,
    opt: str = "adam",
    sched: str = "cosine",
    warmup: float = 0.0,
    alpha: float = 0.5,
    T: float = 4.0,
    hook: Hook | None = None,
    ema: EMA | None = None,
) -> None:
    """``train(model, loader, epochs=5, lr=1e-2, teacher=teacher)`` with knobs: ``warmup`` (a
    fraction of the steps, linear), ``sched`` cosine / linear / none, ``opt`` adam / sgd
    (Nesterov, momentum 0.9); ``hook(step, model, optimizer, inputs, labels)`` after each step."""
    loader.generator.manual_seed(1)
    params = [p for p in model.parameters() if p.requires_grad]
    if opt == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    total = epochs * len(loader)
    warm = int(warmup * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        done = (step - warm) / max(1, total - warm)
        if sched == "cosine":
            return 0.5 * (1 + math.cos(math.pi * done))
        return 1 - done if sched == "linear" else 1.0

    step = 0
    model.train()
    teacher.eval()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for inputs, labels in loader:
            for group in optimizer.param_groups:
                group["lr"] = lr * factor(step)
            logits = model(inputs)
            loss = F.cross_entropy(logits, labels)
            if alpha > 0:
                with torch.no_grad():
                    target = teacher(inputs)
                kd = F.kl_div(
                    F.log_softmax(logits / T, -1),
                    F.log_softmax(target / T, -1),
                    reduction="batchmean",
                    log_target=True,
                )
                loss = (1 - alpha) * loss + alpha * T * T * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if hook is not None:
                hook(step, model, optimizer, inputs, labels)
            if ema is not None:
                ema.update(model)
    model.eval()


def _linear_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            out[f"{name}.weight"], out[f"{name}.bias"] = module.weight, module.bias
    return out


class EMA:
    """Exponential moving average of the effective (masked) weights from step ``start`` on."""

    def __init__(self, decay: float, start: int):
        self.decay, self.start, self.n = decay, start, 0
        self.avg: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module) -> None:
        self.n += 1
        if self.n < self.start:
            return
        now = {k: v.detach().clone() for k, v in _linear_tensors(model).items()}
        if self.avg is None:
            self.avg = now
            return
        for k, v in now.items():
            self.avg[k].mul_(self.decay).add_(v, alpha=1 - self.decay)

    def apply(self, model: nn.Module) -> None:
        assert self.avg is not None
        with torch.no_grad():
            for name, module in model.named_modules():
                if not isinstance(module, nn.Linear):
                    continue
                for pn in ("weight", "bias"):
                    if parametrize.is_parametrized(module, pn):
                        module.parametrizations[pn].original.copy_(self.avg[f"{name}.{pn}"])
                    else:
                        getattr(module, pn).copy_(self.avg[f"{name}.{pn}"])


class Regrow:
    """RigL-style mask search (Evci et al. 2020) at constant sparsity: every ``every`` steps
    until ``stop``, each masked layer drops its k smallest active weights and grows the k
    inactive ones with the largest dense gradient on the current batch (``grow="random"``:
    random ones), k = ``frac`` x cosine decay x active weights; grown weights start at zero and
    their optimizer moments are cleared (``init="keep"``: the pre-pruning value comes back)."""

    def __init__(self, model: nn.Module, every: int, stop: int, frac: float, init: str, grow: str):
        self.every, self.stop, self.frac, self.init, self.grow = every, stop, frac, init, grow
        self.layers = [
            (n, m)
            for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and get_mask(m, "weight") is not None
        ]

    def __call__(self, step, model, optimizer, inputs, labels) -> None:
        if step % self.every or step >= self.stop:
            return
        frac = self.frac / 2 * (1 + math.cos(math.pi * step / self.stop))
        grads = {}
        if self.grow == "grad":
            with parametrize.cached():
                weights = [m.weight for _, m in self.layers]
                loss = F.cross_entropy(model(inputs), labels)
                grads = dict(
                    zip(
                        (n for n, _ in self.layers), torch.autograd.grad(loss, weights), strict=True
                    )
                )
        with torch.no_grad():
            for name, module in self.layers:
                mask = get_mask(module, "weight").bool()
                original = module.parametrizations["weight"].original
                k = int(frac * int(mask.sum()))
                if k == 0:
                    continue
                flat = mask.flatten()
                size = (original * mask).abs().flatten()
                drop = torch.topk(size.masked_fill(~flat, math.inf), k, largest=False).indices
                score = grads[name].abs().flatten() if grads else torch.rand_like(size)
                score = score.masked_fill(flat, -math.inf)
                score[drop] = -math.inf
                grow = torch.topk(score, k).indices
                new = flat.clone()
                new[drop], new[grow] = False, True
                if self.init == "zero":
                    original.view(-1)[grow] = 0.0
                for value in optimizer.state.get(original, {}).values():
                    if torch.is_tensor(value) and value.shape == original.shape:
                        value.view(-1)[grow] = 0.0
                attach_mask(module, "weight", new.view_as(mask))


def recipe(
    dense: nn.Module,
    loader: DataLoader,
    sp: float = 0.95,
    prep: str = "lamp",
    agp: tuple[str, float, int, float] | None = None,
    regrow: tuple[int, float, float, str, str] | None = None,
    ema: tuple[float, int] | None = None,
    **knobs: Any,
) -> tuple[nn.Module, EMA | None]:
    """One fine-tuned model: one-shot ``prep`` masks (lamp, l1) or ``agp=(criterion, end
    fraction, every, s_init)`` or one-shot LAMP + ``regrow=(every, stop fraction, frac, init,
    grow)``; ``knobs`` go to :func:`loop`."""
    seed_everything(1)
    model = copy.deepcopy(dense)
    total = knobs.get("epochs", 5) * len(loader)
    hook = None
    scheduler = None
    if agp is not None:
        criterion, end, every, s_init = agp
        cfg = Unstructured(ratio=sp, criterion=criterion, reconstruct=False)
        scheduler = AGPScheduler(model, cfg, total, every, s_init=s_init, end_step=int(end * total))
        scheduler.start()

        def hook(step, *_):
            scheduler.on_step(step)

    else:
        masks(model, sp, prep)
    if regrow is not None:
        every, stop, frac, init, grow = regrow
        hook = Regrow(model, every, int(stop * total), frac, init, grow)
    average = EMA(*ema) if ema else None
    loop(model, loader, teacher=dense, hook=hook, ema=average, **knobs)
    if scheduler is not None:
        scheduler.finish()
    return model, average


class _Feedback(nn.Module):
    """Forward ``w * mask``; backward straight through to the dense ``w`` (Lin et al. 2020)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (w * self.mask - w).detach()


def dpf(
    dense: nn.Module,
    loader: DataLoader,
    sp: float = 0.95,
    s_init: float = 0.8,
    end: float = 0.6,
    every: int = 50,
    criterion: str = "lamp",
    **knobs: Any,
) -> nn.Module:
    """Dynamic pruning with feedback: the dense weights keep training on the gradient taken at
    the masked ones, the mask is recomputed from the dense weights every ``every`` steps along
    AGP's cubic from ``s_init`` to ``sp`` (so pruned weights can come back), and after ``end``
    of the steps the mask is fixed (pruned weights zeroed) for plain masked fine-tuning."""
    seed_everything(1)
    model = copy.deepcopy(dense)
    total = knobs.get("epochs", 5) * len(loader)
    stop = int(end * total)
    probe = copy.deepcopy(dense)
    masks(probe, s_init, criterion)
    names = [n for n, m in probe.named_modules() if get_mask(m, "weight") is not None]
    mods = dict(model.named_modules())

    def shadow() -> nn.Module:
        state = {}
        for key, value in model.state_dict().items():
            state[key.replace("parametrizations.weight.original", "weight")] = value
        state = {k: v for k, v in state.items() if not k.endswith(".mask")}
        fresh = copy.deepcopy(dense)
        fresh.load_state_dict(state)
        return fresh

    def remask(ratio: float) -> None:
        fresh = shadow()
        masks(fresh, ratio, criterion)
        modules = dict(fresh.named_modules())
        for name in names:
            mods[name].parametrizations["weight"][0].mask.copy_(
                get_mask(modules[name], "weight").to(torch.float32)
            )

    for name in names:
        parametrize.register_parametrization(
            mods[name], "weight", _Feedback(torch.ones_like(mods[name].weight))
        )
    remask(s_init)

    def hook(step, *_):
        if step == stop:
            with torch.no_grad():
                for name in names:
                    module = mods[name]
                    mask = module.parametrizations["weight"][0].mask.clone()
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
                    module.weight.mul_(mask)
                    attach_mask(module, "weight", mask.bool())
        elif step < stop and step % every == 0:
            done = step / stop
            remask(sp + (s_init - sp) * (1 - done) ** 3)

    if stop == 0:
        hook(0)
    loop(model, loader, teacher=dense, hook=hook, **knobs)
    return model


SETS: dict[str, dict[str, dict[str, Any]]] = {
    "r1": {
        "base lamp adam1e-2 kd.5T4": {},
        "l1 adam1e-2 kd.5T4": {"prep": "l1"},
        "lamp kd a.9": {"alpha": 0.9},
        "lamp kd a1": {"alpha": 1.0},
        "lamp kd T2": {"T": 2.0},
        "lamp kd T8": {"T": 8.0},
        "lamp noKD": {"alpha": 0.0},
        "lamp warmup.05": {"warmup": 0.05},
        "lamp lr2e-2 warm.1": {"lr": 2e-2, "warmup": 0.1},
        "lamp linear": {"sched": "linear"},
        "lamp sgd 0.1": {"opt": "sgd", "lr": 0.1},
        "lamp sgd 0.05": {"opt": "sgd", "lr": 0.05},
        "lamp ema.999": {"ema": (0.999, 1000)},
        "agp lamp end.4 ev50": {"agp": ("lamp", 0.4, 50, 0.0)},
        "agp lamp end.6 ev50": {"agp": ("lamp", 0.6, 50, 0.0)},
        "agp l1 end.4 ev50": {"agp": ("l1", 0.4, 50, 0.0)},
        "agp lamp end.4 ev50 s.8": {"agp": ("lamp", 0.4, 50, 0.8)},
        "rigl zero ev100 .3 stop.75": {"regrow": (100, 0.75, 0.3, "zero", "grad")},
        "rigl keep ev100 .3 stop.75": {"regrow": (100, 0.75, 0.3, "keep", "grad")},
        "rigl zero ev50 .1 stop.75": {"regrow": (50, 0.75, 0.1, "zero", "grad")},
    },
    "r2": {
        "agp lamp end.4 ev50 s.5": {"agp": ("lamp", 0.4, 50, 0.5)},
        "agp lamp end.4 ev50 s.7": {"agp": ("lamp", 0.4, 50, 0.7)},
        "agp lamp end.4 ev50 s.9": {"agp": ("lamp", 0.4, 50, 0.9)},
        "agp lamp end.2 ev50 s.8": {"agp": ("lamp", 0.2, 50, 0.8)},
        "agp lamp end.6 ev50 s.8": {"agp": ("lamp", 0.6, 50, 0.8)},
        "agp lamp end.4 ev25 s.8": {"agp": ("lamp", 0.4, 25, 0.8)},
        "agp lamp end.4 ev100 s.8": {"agp": ("lamp", 0.4, 100, 0.8)},
        "agp l1 end.4 ev50 s.8": {"agp": ("l1", 0.4, 50, 0.8)},
        "agp lamp end.4 ev50 s.8 T2": {"agp": ("lamp", 0.4, 50, 0.8), "T": 2.0},
        "rigl zero ev100 .5 stop.75": {"regrow": (100, 0.75, 0.5, "zero", "grad")},
        "rigl zero ev200 .3 stop.75": {"regrow": (200, 0.75, 0.3, "zero", "grad")},
        "rigl zero ev100 .3 stop.5": {"regrow": (100, 0.5, 0.3, "zero", "grad")},
        "rigl zero ev100 .3 stop.75 l1": {"regrow": (100, 0.75, 0.3, "zero", "grad")},
        "rigl zero ev100 .3 stop.75 T2": {"regrow": (100, 0.75, 0.3, "zero", "grad"), "T": 2.0},
        "rigl random ev100 .3 stop.75": {"regrow": (100, 0.75, 0.3, "zero", "random")},
        "l1 T2": {"prep": "l1", "T": 2.0},
    },
    "r4": {
        "agp lamp end.5 ev50 s.8": {"agp": ("lamp", 0.5, 50, 0.8)},
        "agp lamp end.6 ev50 s.85": {"agp": ("lamp", 0.6, 50, 0.85)},
        "agp l1 end.6 ev50 s.8": {"agp": ("l1", 0.6, 50, 0.8)},
        "agp lamp end.8 ev50 s.8": {"agp": ("lamp", 0.8, 50, 0.8)},
    },
    "r5": {
        "98 base lamp": {"sp": 0.98},
        "98 l1": {"sp": 0.98, "prep": "l1"},
        "98 agp lamp end.6 ev50 s.8": {"sp": 0.98, "agp": ("lamp", 0.6, 50, 0.8)},
        "98 agp l1 end.6 ev50 s.8": {"sp": 0.98, "agp": ("l1", 0.6, 50, 0.8)},
    },
}
_AGP = ("lamp", 0.6, 50, 0.8)  # LENET_GRADUAL
SETS["r6"] = {  # seeds 0 1 2: the knobs around the gradual winner that r1-r4 varied only one-shot
    "agp6": {"agp": _AGP},
    "agp6 lr5e-3": {"agp": _AGP, "lr": 5e-3},
    "agp6 lr7e-3": {"agp": _AGP, "lr": 7e-3},
    "agp6 lr1.5e-2": {"agp": _AGP, "lr": 1.5e-2},
    "agp6 lr2e-2": {"agp": _AGP, "lr": 2e-2},
    "agp6 T2": {"agp": _AGP, "T": 2.0},
    "agp6 T8": {"agp": _AGP, "T": 8.0},
    "agp6 a.3": {"agp": _AGP, "alpha": 0.3},
    "agp6 a.7": {"agp": _AGP, "alpha": 0.7},
    "agp6 ev100": {"agp": ("lamp", 0.6, 100, 0.8)},
    "agp6 linear": {"agp": _AGP, "sched": "linear"},
}
SETS["r8"] = {  # seeds 0 1 2: linear decay (r6's best) with its neighbours
    "agp6 linear a.7": {"agp": _AGP, "sched": "linear", "alpha": 0.7},
    "agp6 linear a.3": {"agp": _AGP, "sched": "linear", "alpha": 0.3},
    "agp6 linear lr7e-3": {"agp": _AGP, "sched": "linear", "lr": 7e-3},
}
SETS["r9"] = {  # seeds 3 4: the recipe and r6/r8's two best, on two more dense models
    k: {**SETS["r6"], **SETS["r8"]}[k] for k in ("agp6", "agp6 linear", "agp6 linear a.3")
}
SETS["r7"] = {  # dynamic pruning with feedback (pruned weights keep training and can return)
    "dpf s.8 end.6 ev50": {"dpf": True},
    "dpf s.5 end.6 ev50": {"dpf": True, "s_init": 0.5},
    "dpf s.8 end.8 ev50": {"dpf": True, "end": 0.8},
    "dpf s.8 end.4 ev50": {"dpf": True, "end": 0.4},
    "dpf s.8 end.6 ev20": {"dpf": True, "every": 20},
    "dpf s.95 end.6 ev50": {"dpf": True, "s_init": 0.95},
}
SETS["r2"]["rigl zero ev100 .3 stop.75 l1"]["prep"] = "l1"
SETS["r3"] = {
    k: SETS[s][k]
    for s, k in (
        ("r1", "base lamp adam1e-2 kd.5T4"),
        ("r1", "l1 adam1e-2 kd.5T4"),
        ("r1", "rigl zero ev100 .3 stop.75"),
        ("r1", "agp lamp end.4 ev50 s.8"),
        ("r2", "agp lamp end.6 ev50 s.8"),
        ("r2", "agp lamp end.4 ev50 s.9"),
        ("r2", "agp lamp end.4 ev25 s.8"),
        ("r2", "agp lamp end.4 ev50 s.5"),
    )
}


def _rounds(model, dense, loader, sp: float, criterion: str, lr: float, n: int = 8) -> None:
    """bench/recovery.py's ``run_quantize`` rounds: n geometric rounds x 5 distilled epochs."""
    cfg = Unstructured(ratio=sp, criterion=criterion, include_classifier=True, reconstruct=False)
    _prune_rounds(model, dense, loader, cfg, rounds=n, epochs=5, lr=lr)


def _agp(model, dense, loader, sp, lr, epochs, s_init, end, every) -> None:
    """bench/recovery.py's gradual recipe with LAMP masks, the classifier included."""
    cfg = Unstructured(ratio=sp, criterion="lamp", include_classifier=True, reconstruct=False)
    _gradual(model, dense, loader, cfg, epochs=epochs, lr=lr, s_init=s_init, end=end, every=every)


ARTIFACT: dict[str, Callable[[nn.Module, nn.Module, DataLoader], None]] = {
    "rounds lamp .948 lr3e-3": lambda m, d, dl: _rounds(m, d, dl, 0.948, "lamp", 3e-3),
    "agp40 lamp .95 lr3e-3 s.8 e.6": lambda m, d, dl: _agp(m, d, dl, 0.95, 3e-3, 40, 0.8, 0.6, 200),
    "agp40 lamp .95 lr1e-2 s.8 e.6": lambda m, d, dl: _agp(m, d, dl, 0.95, 1e-2, 40, 0.8, 0.6, 200),
    "agp40 lamp .95 lr1e-3 s.8 e.6": lambda m, d, dl: _agp(m, d, dl, 0.95, 1e-3, 40, 0.8, 0.6, 200),
    "agp5 lamp .95 lr1e-2 s.8 e.6": lambda m, d, dl: _agp(m, d, dl, 0.95, 1e-2, 5, 0.8, 0.6, 50),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="r1", choices=[*SETS, "q"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    loader, val = loaders()
    dense = dense_model(args.seed, loader)
    dense_acc = evaluate(dense, val)
    print(f"dense s{args.seed} {100 * dense_acc:.2f}%", flush=True)
    names = [*ARTIFACT] if args.set == "q" else [*SETS[args.set]]
    for name in names:
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        row: dict[str, Any] = {"name": name, "seed": args.seed, "dense": dense_acc}
        if args.set == "q":
            seed_everything(1)
            model = copy.deepcopy(dense)
            ARTIFACT[name](model, dense, loader)
            path = OUT / f"artifact-{args.seed}.nsz"
            report = compress(model, path, values="int8")
            row.update(float=evaluate(model, val), ratio=report.ratio)
            row["val"] = evaluate(decompress(path), val)
        else:
            spec = copy.deepcopy(SETS[args.set][name])
            if spec.pop("dpf", False):
                model, average = dpf(dense, loader, **spec), None
            else:
                model, average = recipe(dense, loader, **spec)
            row.update(val=evaluate(model, val), sparsity=sparsity(model))
            if average is not None:
                average.apply(model)
                row["ema"] = evaluate(model, val)
        row["loss"] = 100 * (dense_acc - row["val"])
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name:40s} val {100 * row['val']:.2f}% loss {row['loss']:.2f} pt {row}", flush=True)
        with open(OUT / f"res_{args.set}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
