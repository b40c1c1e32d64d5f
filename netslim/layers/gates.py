"""Learned gates on removable blocks.

:class:`GatedBlock` — one learnable scalar per block; the block runs while ``sigmoid(logit) > 0.5``.
During training the forward pass uses the *hard* 0/1 gate (so training sees the model it will
become) and gradients flow through a surrogate: the sigmoid (straight-through estimator) or a
hard-concrete sample (Louizos et al. 2018, stretched and clipped so exact 0 and 1 have mass).

:class:`RoutedBlock` — a tiny head (mean-pool → linear) decides *per sample* whether the block
runs. In eval mode closed samples really skip the block: at batch size 1 a closed gate returns
its input without touching the block's weights, and in a batch only the open samples are run.

The logit is ``gate_scale × parameter``: Adam moves every parameter by about ``lr`` per step
whatever its gradient, so without the scale a gate would need thousands of steps to cross zero
while the weights it competes with train at the same ``lr``.

:class:`GatePenalty` is a ``regularizer`` for ``netslim.training.train``: a hinge on the expected
number of open gates above the target, so gates close only until the budget is met and the task
loss decides which. :func:`bake_gates` turns a trained static gate set into a plain, smaller
model by removing the closed blocks (history kind ``layers``, like any depth pruning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netslim.core import history
from netslim.core.blocks import Block, block_input, block_output, containers
from netslim.core.removal import remove_blocks
from netslim.errors import ConfigError, UnsupportedModelError

GATES_KIND = "gates"
_HC_BETA, _HC_LOW, _HC_HIGH = 2.0 / 3.0, -0.1, 1.1


def _repack(output: Any, main: Tensor) -> Any:
    """``output`` with its main tensor replaced (tensor, or first element of a tuple/list)."""
    if isinstance(output, Tensor):
        return main
    if isinstance(output, tuple):
        return (main, *output[1:])
    return [main, *output[1:]]


def _straight_through(logit: Tensor) -> Tensor:
    """Forward: hard 0/1 (open iff logit > 0); backward: d sigmoid(logit)."""
    soft = torch.sigmoid(logit)
    return (logit > 0).to(soft.dtype) + soft - soft.detach()


def _hard_concrete(logit: Tensor) -> Tensor:
    """A stretched, clipped concrete sample, hardened to 0/1 with a straight-through pass."""
    u = torch.rand_like(logit).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + logit) / _HC_BETA)
    z = (s * (_HC_HIGH - _HC_LOW) + _HC_LOW).clamp(0.0, 1.0)
    return (z > 0.5).to(z.dtype) + z - z.detach()


def _open_probability(logit: Tensor, estimator: str) -> Tensor:
    """What the penalty counts: P(gate open) under the estimator."""
    if estimator == "hard-concrete":
        return torch.sigmoid(logit - _HC_BETA * math.log(-_HC_LOW / _HC_HIGH))
    return torch.sigmoid(logit)


class GatedBlock(nn.Module):
    """A block behind one learnable gate (see the module docstring)."""

    def __init__(
        self,
        block: nn.Module,
        *,
        estimator: str = "ste",
        gate_scale: float = 20.0,
        init_logit: float = 2.0,
    ) -> None:
        super().__init__()
        self.block = block
        self.estimator = estimator
        self.gate_scale = gate_scale
        self.gate = nn.Parameter(torch.tensor(init_logit / gate_scale))
        self._tuple_output = False

    @property
    def logit(self) -> Tensor:
        return self.gate * self.gate_scale

    @property
    def is_open(self) -> bool:
        return bool(self.logit.detach() > 0)

    def open_probability(self) -> Tensor:
        return _open_probability(self.logit, self.estimator)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = block_input(args, kwargs)
        if not self.training:
            if self.is_open:
                return self.block(*args, **kwargs)
            return (x,) if self._tuple_output else x  # skipped: no compute at all
        out = self.block(*args, **kwargs)
        self._tuple_output = not isinstance(out, Tensor)
        y = block_output(out)
        sample = _hard_concrete if self.estimator == "hard-concrete" else _straight_through
        gate = sample(self.logit).to(y.dtype)
        return _repack(out, x + gate * (y - x))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Model loops sometimes read attributes of their layers (e.g. ``attention_type``);
            # private names and a half-built module (deepcopy, unpickling) must not recurse.
            modules = self.__dict__.get("_modules")
            if name.startswith("_") or not modules or "block" not in modules:
                raise
            return getattr(modules["block"], name)


class RoutedBlock(nn.Module):
    """A block behind a per-sample gating head (see the module docstring)."""

    def __init__(
        self, block: nn.Module, channels: int, *, gate_scale: float = 20.0, init_logit: float = 2.0
    ) -> None:
        super().__init__()
        self.block = block
        self.gate_scale = gate_scale
        self.head = nn.Linear(channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, init_logit / gate_scale)
        self.estimator = "ste"
        self.last_probability: Tensor | None = None
        self.executed = 0
        self.seen = 0

    def logits(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3)) if x.dim() == 4 else x.mean(dim=1) if x.dim() == 3 else x
        return self.head(pooled).squeeze(-1) * self.gate_scale

    def forward(self, x: Tensor) -> Tensor:
        logit = self.logits(x)
        if self.training:
            y = self.block(x)
            if not isinstance(y, Tensor):
                raise UnsupportedModelError("per-input gates need blocks that return one tensor")
            self.last_probability = torch.sigmoid(logit)
            gate = _straight_through(logit).view(-1, *([1] * (x.dim() - 1))).to(y.dtype)
            return x + gate * (y - x)
        self.last_probability = None  # (a graph held on the module would block deepcopy)
        open_ = logit > 0
        if torch.compiler.is_exporting():
            # an exported graph cannot pick a batch subset: every sample runs the block and
            # keeps its output where its gate is open (what eager computes, without the saving)
            y = self.block(x)
            return torch.where(open_.view(-1, *([1] * (x.dim() - 1))), y, x)
        count = int(open_.sum())
        self.executed += count
        self.seen += x.shape[0]
        if count == 0:
            return x  # every sample skips: the block's weights are never touched
        if count == x.shape[0]:
            return self.block(x)
        out = x.clone()
        out[open_] = self.block(x[open_])
        return out


Gate = GatedBlock | RoutedBlock


def gate_modules(model: nn.Module) -> dict[str, Gate]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (GatedBlock, RoutedBlock))}


def _channels(example: Tensor) -> int:
    return int(example.shape[1] if example.dim() == 4 else example.shape[-1])


def attach_gates(
    model: nn.Module,
    blocks: Sequence[Block],
    *,
    per_input: bool = False,
    estimator: str = "ste",
    gate_scale: float = 20.0,
    init_logit: float = 2.0,
    channels: Sequence[int] | None = None,
    record: bool = True,
) -> list[str]:
    """Wrap each block in a gate, in place (same position, so block names stay valid).

    Per-input heads need each block's channel count (``channels``, found by the caller from a
    forward pass). The wrapping is recorded (kind ``gates``) so a gated model saves and reloads.
    """
    if not blocks:
        raise UnsupportedModelError("no removable block to gate")
    if gate_modules(model):
        raise ConfigError("the model already has gates: bake or detach them first")
    if per_input and (channels is None or len(channels) != len(blocks)):
        raise ConfigError("per-input gates need the channel count of every block")
    holders = containers(model)
    for block in blocks:
        if block.container not in holders or block.index >= len(holders[block.container]):
            raise ConfigError(f"block {block.name!r} is not in the model")
    names = []
    for i, block in enumerate(blocks):
        holder = holders[block.container]
        inner = holder[block.index]
        if per_input:
            wrapped: nn.Module = RoutedBlock(
                inner, int(channels[i]), gate_scale=gate_scale, init_logit=init_logit
            )
        else:
            wrapped = GatedBlock(
                inner, estimator=estimator, gate_scale=gate_scale, init_logit=init_logit
            )
        param = next(inner.parameters(), None)
        if param is not None:
            wrapped.to(device=param.device)
        holder[block.index] = wrapped
        names.append(block.name)
    if record:
        history.record(
            model,
            GATES_KIND,
            {
                "blocks": names,
                "per_input": per_input,
                "estimator": estimator,
                "gate_scale": gate_scale,
                "init_logit": init_logit,
                "channels": list(channels) if channels is not None else None,
            },
        )
    return names


def _unwrap(model: nn.Module) -> list[tuple[str, Gate]]:
    holders = containers(model)
    gates = []
    for name, gate in gate_modules(model).items():
        container, _, index = name.rpartition(".")
        holders[container][int(index)] = gate.block
        gates.append((name, gate))
    steps = history.get_history(model)
    for i in range(len(steps) - 1, -1, -1):
        if steps[i]["kind"] == GATES_KIND:
            del steps[i]
            break
    history.set_history(model, steps)
    return gates


def detach_gates(model: nn.Module) -> None:
    """Remove every gate, keeping every block (undoes :func:`attach_gates`)."""
    _unwrap(model)


class GatePenalty:
    """``regularizer(model)``: ``weight × relu(E[open gates] − target) / n_gates``.

    Static gates count ``Σ P(open)``; per-input gates count the mean over the batch of the
    expected number of executed blocks per sample. ``target=None`` penalises every open gate.
    """

    def __init__(self, weight: float = 1.0, target: float | None = None) -> None:
        self.weight = weight
        self.target = target

    def __call__(self, model: nn.Module) -> Tensor:
        gates = list(gate_modules(model).values())
        if not gates:
            raise UnsupportedModelError("the model has no gates to penalise")
        terms = []
        for gate in gates:
            if isinstance(gate, RoutedBlock):
                if gate.last_probability is not None:
                    terms.append(gate.last_probability)
                    gate.last_probability = None  # consumed: a module must not keep a graph
            else:
                terms.append(gate.open_probability())
        if not terms:
            return torch.zeros(())
        expected = torch.stack([t if t.dim() else t.expand_as(terms[0]) for t in terms]).sum(0)
        expected = expected.mean()
        target = 0.0 if self.target is None else float(self.target)
        return self.weight * F.relu(expected - target) / len(gates)


def gate_states(model: nn.Module) -> dict[str, dict[str, float | bool]]:
    """Each static gate's logit and whether it is open."""
    return {
        name: {"logit": round(float(g.logit.detach()), 4), "open": g.is_open}
        for name, g in gate_modules(model).items()
        if isinstance(g, GatedBlock)
    }


def executed_blocks(model: nn.Module, reset: bool = False) -> float:
    """Mean number of routed blocks executed per sample since the last reset (eval mode)."""
    gates = [g for g in gate_modules(model).values() if isinstance(g, RoutedBlock)]
    if not gates or gates[0].seen == 0:
        return 0.0
    mean = sum(g.executed / max(g.seen, 1) for g in gates)
    if reset:
        for g in gates:
            g.executed = g.seen = 0
    return mean


def bake_gates(model: nn.Module, target_open: int | None = None) -> list[str]:
    """Replace trained static gates by a plain model without the closed blocks; returns them.

    With ``target_open`` exactly that many blocks stay (the highest logits), so the baked depth
    is the one asked for even when training stopped a gate or two short of it.
    """
    gates = gate_modules(model)
    if not gates:
        raise ConfigError("the model has no gates to bake")
    if any(isinstance(g, RoutedBlock) for g in gates.values()):
        raise ConfigError("per-input gates decide at run time and cannot be baked into a model")
    logits = {name: float(g.logit.detach()) for name, g in gates.items()}
    if target_open is not None:
        if not 1 <= target_open <= len(logits):
            raise ConfigError(f"target_open must be in [1, {len(logits)}], got {target_open}")
        keep = set(sorted(logits, key=lambda n: -logits[n])[:target_open])
    else:
        keep = {n for n, v in logits.items() if v > 0} or {max(logits, key=logits.get)}
    closed = [n for n in logits if n not in keep]
    _unwrap(model)
    removed = remove_blocks(model, closed)
    if removed:
        history.record(model, "layers", {"blocks": removed, "criterion": "gates"})
    return removed
