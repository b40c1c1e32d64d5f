"""Layer-wise reconstruction: refit a pruned model's convs and linears so that, on a few
calibration batches and no labels, each layer's output matches the dense model's.

Layers are visited in forward order and their inputs are read from the *pruned* model with the
layers before them already refitted, so each solve also absorbs the error arriving from below
(the targets come from the dense model at the same layer). A convolution is a linear map of its
unfolded input patches; to keep the Gram matrix cheap, at most ``rows_per_batch`` randomly chosen
(seeded) output positions of each batch are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netslim.errors import ConfigError
from netslim.importance.calibration import forward
from netslim.reconstruct.linalg import masked_solve, ridge_solve, squared_error

DAMP = 1e-3
ROWS_PER_BATCH = 4096


class _Stop(Exception):
    """Raised by a capture hook: nothing after the layer of interest needs to run."""


@dataclass
class LayerFit:
    """Squared output error on the calibration data before / after the refit, relative to the
    dense outputs' squared norm."""

    before: float
    after: float


def supported(module: nn.Module) -> bool:
    """Linear, or Conv2d with one group and zero padding (a plain matmul of unfolded patches)."""
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _weight(module: nn.Module) -> Tensor:
    """The stored (unmasked) weight tensor that reconstruction writes into."""
    par = getattr(module, "parametrizations", None)
    if par is not None and "weight" in par:
        return par["weight"].original
    return module.weight


def _rows_in(module: nn.Module, x: Tensor) -> Tensor:
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _rows_out(module: nn.Module, y: Tensor) -> Tensor:
    if isinstance(module, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])


def _capture(model: nn.Module, module: nn.Module, batch, want_input: bool) -> Tensor:
    store: list[Tensor] = []

    def hook(_m, args, out):
        store.append((args[0] if want_input else out).detach())
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        forward(model, batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not store:
        raise ConfigError(f"{type(module).__name__} never ran on the calibration batch")
    return store[0]


def forward_order(model: nn.Module, names: Sequence[str], batch) -> list[str]:
    """``names`` sorted by when their module first runs (modules that never run are dropped)."""
    seen: list[str] = []
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda *_, n=n: seen.append(n) if n not in seen else None
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    return seen


class _Stats:
    """Sufficient statistics of one layer's least-squares problem, in float64."""

    def __init__(self) -> None:
        self.gram: Tensor | None = None
        self.cross: Tensor | None = None
        self.target_sq = 0.0

    def add(self, x: Tensor, y: Tensor) -> None:
        x, y = x.double(), y.double()
        g, c = x.t() @ x, x.t() @ y
        self.gram = g if self.gram is None else self.gram + g
        self.cross = c if self.cross is None else self.cross + c
        self.target_sq += float((y * y).sum())


def layer_stats(
    model: nn.Module,
    dense: nn.Module,
    name: str,
    batches: Sequence,
    out_index: Tensor | None = None,
    bias: bool = True,
    rows_per_batch: int = ROWS_PER_BATCH,
    seed: int = 0,
) -> _Stats:
    """Gram of the pruned layer's inputs (with a ones column when its bias is refitted) and the
    cross products with the dense layer's outputs (only ``out_index`` channels when given)."""
    module, reference = model.get_submodule(name), dense.get_submodule(name)
    gen = torch.Generator().manual_seed(seed)
    stats = _Stats()
    with torch.no_grad():
        for batch in batches:
            x = _rows_in(module, _capture(model, module, batch, want_input=True))
            y = _rows_out(reference, _capture(dense, reference, batch, want_input=False))
            if out_index is not None:
                y = y.index_select(1, out_index.to(y.device))
            if not bias and module.bias is not None:  # a fixed (masked) bias: fit around it
                y = y - module.bias.detach()
            if x.shape[0] > rows_per_batch:
                pick = torch.randperm(x.shape[0], generator=gen)[:rows_per_batch].to(x.device)
                x, y = x.index_select(0, pick), y.index_select(0, pick)
            if bias:
                x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
            stats.add(x.cpu(), y.cpu())
    return stats


def refit_layer(
    model: nn.Module,
    dense: nn.Module,
    name: str,
    batches: Sequence,
    *,
    out_index: Tensor | None = None,
    keep: Tensor | None = None,
    damp: float = DAMP,
    rows_per_batch: int = ROWS_PER_BATCH,
) -> LayerFit:
    """Refit ``model.<name>`` (weight and, when it has an unmasked one, bias) by least squares.

    ``keep``: the layer's weight mask (True = kept): only kept weights change, masked ones are
    left as they are (multiplied by zero anyway). Without it every weight is refitted.
    """
    module = model.get_submodule(name)
    if not supported(module):
        raise ConfigError(f"{name}: cannot reconstruct a {type(module).__name__} of this kind")
    par = getattr(module, "parametrizations", None)
    has_bias = module.bias is not None and not (par is not None and "bias" in par)
    stats = layer_stats(model, dense, name, batches, out_index, has_bias, rows_per_batch)
    assert stats.gram is not None and stats.cross is not None
    stored = _weight(module)
    w = module.weight.detach().reshape(stored.shape[0], -1).double().cpu()
    if has_bias:
        w = torch.cat([w, module.bias.detach().double().cpu()[:, None]], 1)
    before = squared_error(w, stats.gram, stats.cross, stats.target_sq)
    if keep is None:
        new = ridge_solve(stats.gram, stats.cross, damp)
    else:
        support = keep.reshape(keep.shape[0], -1).bool().cpu()
        if has_bias:
            support = torch.cat([support, torch.ones_like(support[:, :1])], 1)
        new = masked_solve(stats.gram, stats.cross, support, damp)
    after = squared_error(new, stats.gram, stats.cross, stats.target_sq)
    scale = max(stats.target_sq, 1e-30)  # errors relative to the dense outputs' energy
    if not after < before:  # never make a layer worse than it was (e.g. a degenerate sample)
        return LayerFit(before / scale, before / scale)
    with torch.no_grad():
        k = stored[0].numel()
        flat = new[:, :k].to(stored.dtype).reshape(stored.shape).to(stored.device)
        if keep is None:
            stored.copy_(flat)
        else:
            stored.copy_(torch.where(keep.bool().to(stored.device), flat, stored))
        if has_bias:
            module.bias.copy_(new[:, k].to(module.bias.dtype).to(module.bias.device))
    return LayerFit(before / scale, after / scale)


def reestimate_bn(model: nn.Module, batches: Sequence) -> int:
    """Recompute every BatchNorm's running mean/variance on ``batches`` (a plain average over
    them), everything else in eval mode. Returns how many BatchNorm layers were reset."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    bns = [m for m in bns if m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
            m.train()
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, mode in modes.items():
            m.train(mode)
    return len(bns)
