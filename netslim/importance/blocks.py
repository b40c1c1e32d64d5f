"""How much each block matters. Every criterion returns one score per block, higher = keep.

- :class:`BlockInfluence` (ShortGPT, Men et al. 2024): ``1 − cos(x_in, x_out)`` per token or
  pixel. A block whose output points where its input already pointed barely changes the
  representation, so removing it (= passing its input on) costs little. One dense pass.
- :class:`BranchNorm`: ``‖x_out − x_in‖ / ‖x_in‖``, the relative size of the residual branch's
  contribution. Same pass; sensitive to magnitude where Block Influence only sees direction.
- :class:`Ablation`: the loss increase when the block is replaced by the identity on the
  calibration batches (the user's ``loss(model, batch)`` when given, else cross-entropy with
  labels, else ``1 − cos`` of the model's output to the dense output). It measures exactly what
  removal does, at one forward pass per block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netslim.core.batches import Loss
from netslim.core.blocks import Block, block_input, block_output, call_model
from netslim.core.config import choice
from netslim.errors import ConfigError


def _feature_dim(t: Tensor) -> int:
    """Channels of an image batch ``(N, C, H, W)``, the last dim of tokens ``(N, L, D)``."""
    return 1 if t.dim() == 4 else -1


def block_influence(x_in: Tensor, x_out: Tensor) -> float:
    """``1 − mean cos(x_in, x_out)`` over every token/pixel vector (ShortGPT's BI)."""
    dim = _feature_dim(x_in)
    cos = F.cosine_similarity(x_in.float(), x_out.float(), dim=dim, eps=1e-8)
    return float(1.0 - cos.mean())


def branch_norm(x_in: Tensor, x_out: Tensor) -> float:
    """``‖x_out − x_in‖ / ‖x_in‖`` over the batch: the residual branch's relative size."""
    diff = (x_out.float() - x_in.float()).norm()
    return float(diff / x_in.float().norm().clamp_min(1e-12))


def main_output(output: Any) -> Tensor:
    """The tensor a model's quality is judged on: logits, else the last hidden state."""
    if isinstance(output, Tensor):
        return output
    for key in ("logits", "last_hidden_state"):
        value = getattr(output, key, None)
        if isinstance(value, Tensor):
            return value
    found = block_output(output)
    if found is None:
        raise ConfigError(f"cannot find an output tensor in a {type(output).__name__}")
    return found


def _labels(batch: Any) -> Tensor | None:
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], Tensor):
        return batch[1]
    return None


class Criterion:
    """Base class: ``score(model, blocks, batches) -> list[float]`` (higher = more important).

    ``loss``: the user's ``loss(model, batch) -> scalar``, for the criteria that measure a loss
    (the others read only the blocks' activations and ignore it)."""

    name = "base"

    def __init__(self, loss: Loss | None = None) -> None:
        self.loss = loss

    def score(
        self, model: nn.Module, blocks: Sequence[Block], batches: Sequence[Any]
    ) -> list[float]:
        raise NotImplementedError


class _PairCriterion(Criterion):
    """Scores from each block's (input, output) pair on the dense model, averaged over batches."""

    @staticmethod
    def pair_score(x_in: Tensor, x_out: Tensor) -> float:
        raise NotImplementedError

    def score(
        self, model: nn.Module, blocks: Sequence[Block], batches: Sequence[Any]
    ) -> list[float]:
        sums = [0.0] * len(blocks)
        counts = [0] * len(blocks)
        handles = []

        def make(i: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                x_in, x_out = block_input(args, kwargs), block_output(output)
                if x_in is not None and x_out is not None:
                    sums[i] += self.pair_score(x_in, x_out)
                    counts[i] += 1

            return hook

        for i, block in enumerate(blocks):
            module = model.get_submodule(block.name)
            handles.append(module.register_forward_hook(make(i), with_kwargs=True))
        try:
            with torch.no_grad():
                for batch in batches:
                    call_model(model, batch)
        finally:
            for handle in handles:
                handle.remove()
        return [s / max(c, 1) for s, c in zip(sums, counts, strict=True)]


class BlockInfluence(_PairCriterion):
    name = "block-influence"
    pair_score = staticmethod(block_influence)


class BranchNorm(_PairCriterion):
    name = "branch-norm"
    pair_score = staticmethod(branch_norm)


class Ablation(Criterion):
    """Loss increase with the block bypassed (its output replaced by its input)."""

    name = "ablation"

    def score(
        self, model: nn.Module, blocks: Sequence[Block], batches: Sequence[Any]
    ) -> list[float]:
        with torch.no_grad():
            # the default loss compares with the dense outputs; the user's loss needs none
            dense = (
                []
                if self.loss is not None
                else [main_output(call_model(model, b)) for b in batches]
            )
            base = self._total(model, batches, dense)
            scores = []
            for block in blocks:
                module = model.get_submodule(block.name)
                handle = module.register_forward_hook(_bypass, with_kwargs=True)
                try:
                    total = self._total(model, batches, dense)
                finally:
                    handle.remove()
                scores.append((total - base) / len(batches))
        return scores

    def _total(self, model: nn.Module, batches: Sequence[Any], dense: Sequence[Tensor]) -> float:
        """The loss summed over ``batches`` for the model as it runs now (a bypass hooked in)."""
        if self.loss is not None:
            return sum(float(self.loss(model, b)) for b in batches)
        return sum(
            self._default_loss(b, main_output(call_model(model, b)), d)
            for b, d in zip(batches, dense, strict=True)
        )

    @staticmethod
    def _default_loss(batch: Any, out: Tensor, dense: Tensor) -> float:
        """Cross-entropy with labels, else ``1 − cos`` of the output to the dense output."""
        labels = _labels(batch)
        if labels is not None and out.dim() == 2 and labels.dim() == 1:
            return float(F.cross_entropy(out.float(), labels.to(out.device)))
        cos = F.cosine_similarity(out.float(), dense.float(), dim=-1, eps=1e-8)
        return float(1.0 - cos.mean())


def _bypass(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Forward hook that makes a block the identity (keeps any extra tuple elements)."""
    x = block_input(args, kwargs)
    if isinstance(output, Tensor):
        return x
    if isinstance(output, tuple):
        return (x, *output[1:])
    if isinstance(output, list):
        return [x, *output[1:]]
    return output


CRITERIA: dict[str, type[Criterion]] = {
    "block-influence": BlockInfluence,
    "branch-norm": BranchNorm,
    "ablation": Ablation,
}


def make_criterion(name: str, loss: Loss | None = None) -> Criterion:
    return CRITERIA[choice("layer criterion", name, tuple(CRITERIA))](loss)


def score_blocks(
    model: nn.Module,
    blocks: Sequence[Block],
    batches: Sequence[Any],
    criterion: str | Criterion = "block-influence",
    loss: Loss | None = None,
) -> list[float]:
    """Score ``blocks`` in eval mode (BatchNorm/dropout must not change while measuring);
    ``loss``: the user's ``loss(model, batch)``, for a criterion named by string."""
    crit = make_criterion(criterion, loss) if isinstance(criterion, str) else criterion
    was_training = model.training
    model.eval()
    try:
        return crit.score(model, blocks, batches)
    finally:
        model.train(was_training)


def choose(scores: Sequence[float], count: int) -> list[int]:
    """Indices of the ``count`` lowest scores (ties: the later block goes first)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))
    return sorted(order[:count])
