"""Automated gradual pruning (Zhu & Gupta, 2017, "To prune, or not to prune").

Sparsity rises from ``s_init`` to ``s_final`` along a cubic between ``start_step`` (t0) and
``end_step`` (t0 + nΔt)::

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n Δt))**3

fast at first, while many redundant weights remain, and slowly near the end, so the network has
time to recover between mask updates.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from netslim.errors import ConfigError
from netslim.schedules._checks import check_int, check_sparsity
from netslim.unstructured.allocation import compute_masks
from netslim.unstructured.config import Unstructured
from netslim.unstructured.method import apply_masks, record_masks


def _check_window(s_init: float, s_final: float, start_step: int, end_step: int) -> None:
    check_sparsity("s_init", s_init)
    check_sparsity("s_final", s_final)
    if s_init > s_final:
        raise ConfigError(f"s_init ({s_init}) must not exceed s_final ({s_final})")
    check_int("start_step", start_step, 0)
    check_int("end_step", end_step, start_step + 1)


def agp_sparsity(
    step: int, *, s_init: float, s_final: float, start_step: int, end_step: int
) -> float:
    """Target sparsity at ``step``: ``s_init`` before the window, ``s_final`` after it."""
    _check_window(s_init, s_final, start_step, end_step)
    if step <= start_step:
        return float(s_init)
    if step >= end_step:
        return float(s_final)
    progress = (step - start_step) / (end_step - start_step)
    return s_final + (s_init - s_final) * (1.0 - progress) ** 3


class AGPScheduler:
    """Re-masks ``model`` at the AGP sparsity every ``update_every`` steps; plug ``on_step`` into
    a trainer's per-step hook. ``config.ratio`` is the final sparsity; every other setting of
    ``config`` (scope, criterion, ignore, ...) is used for each update.

    ``end_step`` defaults to 80% of ``total_steps``, leaving the rest of training to recover at
    the final sparsity; ``update_every`` defaults to a tenth of the pruning window.

    With ``s_init > 0`` call :meth:`start` before the first step: the curve is at ``s_init``
    from step 0, but ``on_step`` first masks at an update step, so without it the steps before
    that one would train the dense model (:func:`netslim.schedules.run_agp` calls it).
    """

    def __init__(
        self,
        model: nn.Module,
        config: Unstructured,
        total_steps: int,
        update_every: int | None = None,
        *,
        s_init: float = 0.0,
        start_step: int = 0,
        end_step: int | None = None,
    ):
        if not isinstance(config, Unstructured):
            raise ConfigError(f"AGP needs an Unstructured config, got {type(config).__name__}")
        if config.nm is not None:
            raise ConfigError("AGP raises sparsity gradually; N:M sparsity is fixed, use oneshot")
        self.total_steps = check_int("total_steps", total_steps, 1)
        if end_step is None:
            end_step = max(start_step + 1, int(0.8 * self.total_steps))
        _check_window(s_init, config.ratio, start_step, end_step)
        if update_every is None:
            update_every = max(1, (end_step - start_step) // 10)
        self.update_every = check_int("update_every", update_every, 1)
        self.model, self.config = model, config
        self.s_init, self.s_final = float(s_init), config.ratio
        self.start_step, self.end_step = start_step, end_step
        self.current: float | None = None
        self.updates: list[tuple[int, float]] = []

    def sparsity_at(self, step: int) -> float:
        return agp_sparsity(
            step,
            s_init=self.s_init,
            s_final=self.s_final,
            start_step=self.start_step,
            end_step=self.end_step,
        )

    def _due(self, step: int) -> bool:
        if step < self.start_step:
            return False
        if step >= self.end_step:
            return self.current != self.s_final
        return (step - self.start_step) % self.update_every == 0

    def start(self) -> float | None:
        """Mask at ``s_init`` now, before training starts; returns the sparsity applied, or
        None when there is nothing to apply (``s_init == 0`` or masks already applied).

        Why a start above 0: when a trained model is pruned gradually inside a short
        fine-tuning, one-shot masks reach a middle sparsity almost for free, so the steps are
        better spent on the last part of the climb (80 % → 95 % on LeNet-300-100 in
        docs/recovery.md, against rising from dense)."""
        if self.current is not None or self.s_init == 0.0:
            return None
        self._apply(0, self.s_init)
        return self.s_init

    def on_step(self, step: int, *args: Any, **kwargs: Any) -> float | None:
        """Update the masks if ``step`` is an update step; returns the sparsity applied, if any.
        Extra arguments a trainer may pass (loss, ...) are ignored."""
        if not self._due(step):
            return None
        sparsity = self.sparsity_at(step)
        if self.current is not None and sparsity <= self.current:
            return None  # masks are monotone: nothing would change
        self._apply(step, sparsity)
        return sparsity

    def finish(self) -> float:
        """Make sure the final sparsity is applied (e.g. if training stopped before end_step)."""
        if self.current != self.s_final:
            self._apply(self.end_step, self.s_final)
        return self.s_final

    def _apply(self, step: int, sparsity: float) -> None:
        masks = compute_masks(self.model, replace(self.config, ratio=sparsity))
        apply_masks(self.model, masks)
        if self.current is None:  # one history record: replay only needs the targets
            record_masks(self.model, list(masks), self.config)
        self.current = sparsity
        self.updates.append((step, sparsity))
