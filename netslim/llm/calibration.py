"""Calibration data: text → token sequences, the first block's inputs, per-layer input statistics.

All one-shot LLM pruning methods here are layer-local: they only need what flows *into* each
linear layer on a few hundred calibration sequences (Wanda: per-feature norms; SparseGPT and
the width correction: the Gram matrix ``XᵀX``). The inputs of block 0 are caught with a
pre-hook that stops the forward pass right there, which also captures whatever the model
passes every block (causal mask, rotary ``position_embeddings``, ``position_ids``) so blocks
can be run on their own afterwards (Frantar & Alistarh, 2023, §4 "sequential" procedure).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from netslim.errors import ConfigError, DataError
from netslim.llm.arch import block_linears, layers


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file; a missing or empty file is a :class:`DataError`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file {p} does not exist")
    text = p.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise DataError(f"text file {p} is empty")
    return text


def token_sequences(
    tokenizer: Any,
    text: str,
    seq_len: int,
    n_samples: int | None = None,
    *,
    what: str = "calibration",
) -> Tensor:
    """``(N, seq_len)`` token ids: consecutive non-overlapping windows of the tokenized text.

    With ``n_samples`` fewer than the windows available, evenly spaced windows are taken so the
    sample covers the whole text deterministically. Fewer tokens than one window is an error.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ConfigError(f"seq_len must be an int >= 2, got {seq_len!r}")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    available = ids.numel() // seq_len
    if available < 1:
        raise DataError(
            f"{what} text has {ids.numel()} tokens, fewer than one sequence of {seq_len}: "
            "give more text or a shorter --seq-len"
        )
    windows = ids[: available * seq_len].view(available, seq_len)
    if n_samples is not None and n_samples < available:
        if n_samples < 1:
            raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
        pick = torch.linspace(0, available - 1, n_samples).round().long()
        windows = windows[pick]
    return windows.contiguous()


def calibration_summary(ids: Tensor) -> dict[str, int]:
    """What a report says of the calibration ids ``(N, seq_len)``: sequences, length, tokens."""
    return {
        "sequences": int(ids.shape[0]),
        "seq_len": int(ids.shape[1]),
        "tokens": int(ids.numel()),
    }


class _Caught(Exception):
    """Raised by the block-0 pre-hook to stop the forward pass once the inputs are caught."""


@dataclass
class BlockInputs:
    """Hidden states entering a block, ``(N, L, D)``, and the extra arguments every block gets."""

    hidden: Tensor
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _drop_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "past_key_value")
    }
    if "use_cache" in out:
        out["use_cache"] = False
    return out


@torch.no_grad()
def capture_inputs(model: nn.Module, ids: Tensor) -> BlockInputs:
    """Run each calibration sequence up to block 0 and keep what enters it (in float32).

    Sequences are run one at a time so the extra arguments (mask, rotary embeddings) are those
    of a batch of one and fit every sequence, which all have the same length.
    """
    first = layers(model)[0]
    caught: list[tuple[Tensor, tuple, dict]] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        caught.append((args[0].detach().float(), args[1:], kwargs))
        raise _Caught

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for row in ids:
            with suppress(_Caught):
                model(input_ids=row[None], use_cache=False)
    finally:
        handle.remove()
    if not caught:
        raise DataError("no calibration sequences")
    _, args, kwargs = caught[0]
    hidden = torch.cat([h for h, _, _ in caught])
    args = tuple(None if _is_cache(a) else a for a in args)
    return BlockInputs(hidden, args, _drop_cache(kwargs))


def _is_cache(value: Any) -> bool:
    return type(value).__name__.endswith("Cache")


def run_block(block: nn.Module, inputs: BlockInputs, hidden: Tensor | None = None) -> Tensor:
    """Outputs of ``block`` for every sequence (one at a time, in the block's dtype)."""
    hidden = inputs.hidden if hidden is None else hidden
    dtype = next(block.parameters()).dtype
    outs = []
    with torch.no_grad():
        for h in hidden:
            out = block(h[None].to(dtype), *inputs.args, **inputs.kwargs)
            out = out[0] if isinstance(out, tuple) else out
            outs.append(out.float())
    return torch.cat(outs)


class LayerStats:
    """Running statistics of one linear layer's inputs over all calibration tokens.

    ``sq``: Σ x_j² per input feature (Wanda's ‖X_j‖₂²); ``gram``: Σ x xᵀ (SparseGPT's Hessian
    up to the factor 2/n, also the normal equations of the least-squares width correction).
    Products are summed in place in float32 over up to ``FLUSH_TOKENS`` tokens (``addmm_``: no
    temporary, no conversion per batch), then added to float64 running sums, which keep the
    totals exact enough over ~10⁵ tokens.
    """

    FLUSH_TOKENS = 4096

    def __init__(self, in_features: int, want: set[str]):
        self.tokens = 0
        self.sq = torch.zeros(in_features, dtype=torch.float64) if "sq" in want else None
        self._gram = (
            torch.zeros(in_features, in_features, dtype=torch.float64) if "gram" in want else None
        )
        self._partial: Tensor | None = None
        self._partial_tokens = 0

    def add(self, x: Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if not self.tokens:  # the sums live where the activations are (a GPU's, say)
            self.sq = None if self.sq is None else self.sq.to(x.device)
            self._gram = None if self._gram is None else self._gram.to(x.device)
        self.tokens += x.shape[0]
        if self.sq is not None:
            self.sq += (x * x).sum(0).double()
        if self._gram is not None:
            if self._partial is None:
                self._partial = torch.zeros(self._gram.shape, device=x.device)
            self._partial.addmm_(x.t(), x)
            self._partial_tokens += x.shape[0]
            if self._partial_tokens >= self.FLUSH_TOKENS:
                self._flush()

    def _flush(self) -> None:
        if self._gram is not None and self._partial is not None and self._partial_tokens:
            self._gram.add_(self._partial)  # cast element by element: no float64 copy
            self._partial.zero_()
            self._partial_tokens = 0

    @property
    def gram(self) -> Tensor | None:
        """Σ x xᵀ over every token added so far (float64), or ``None`` if not collected."""
        self._flush()
        return self._gram

    @property
    def norms(self) -> Tensor:
        """‖X_j‖₂ per input feature."""
        if self.sq is None:
            raise RuntimeError("norms were not collected")
        return self.sq.sqrt().float()

    def hessian(self) -> Tensor:
        """``H = 2/n · XᵀX`` (float32), the curvature of the layer-wise squared error."""
        gram = self.gram
        if gram is None:
            raise RuntimeError("the Gram matrix was not collected")
        return (gram * (2.0 / max(self.tokens, 1))).float()


@contextmanager
def collecting(block: nn.Module, want: dict[str, set[str]]) -> Iterator[dict[str, LayerStats]]:
    """Hooks the linears named in ``want`` (block-relative names) and yields their stats.

    Linears that read the very same tensor (q/k/v, gate/up) share one :class:`LayerStats`,
    so each distinct input is accumulated once.
    """
    linears = block_linears(block)
    stats: dict[str, LayerStats] = {}
    seen: list[tuple[Tensor, str]] = []  # inputs of the current forward (held: ids stay unique)
    alias: dict[str, str] = {}
    handles = [block.register_forward_pre_hook(lambda *_: seen.clear())]
    for name, needs in want.items():
        module = linears[name]
        in_features = module.weight.shape[0 if type(module).__name__ == "Conv1D" else 1]
        stats[name] = LayerStats(in_features, set(needs))

        def hook(_m: nn.Module, args: tuple, _out: Any, name: str = name) -> None:
            x = args[0]
            if name in alias:
                return
            owner = next((o for t, o in seen if t is x), None)
            if owner is not None and want[owner] == want[name] and stats[name].tokens == 0:
                alias[name] = owner
                stats[name] = stats[owner]
                return
            seen.append((x, name))
            stats[name].add(x)

        handles.append(module.register_forward_hook(hook))
    try:
        yield stats
    finally:
        seen.clear()
        for h in handles:
            h.remove()
