"""A netslim schedule inside someone else's training loop, independent of the framework.

The framework callbacks (:mod:`netslim.integrations.hf_trainer`,
:mod:`netslim.integrations.lightning`) only translate their hooks into two calls:
``session.on_step(model, step, optimizer=...)`` after every optimizer step (and once with step 0
before training) and ``session.finish(model, optimizer=...)`` at the end. The session decides when
to prune and to what sparsity, runs :func:`netslim.prune_`, and hands the optimizer state over to
the parameters structural pruning replaced (:mod:`netslim.training.optim_state`), so Adam's
moments of the kept channels survive instead of the optimizer silently training dead tensors.

Schedules (the sparsity targets are cumulative, of the model the session started with):

- ``"oneshot"``: everything at ``start_step`` (default 0: before the first step), the rest of
  training fine-tunes;
- ``"iterative"``: ``rounds`` steps spread evenly over ``[start_step, end_step)``, each removing
  the same share of what remains (:func:`netslim.schedules.iterative_ratios`);
- ``"agp"``: the cubic of Zhu & Gupta every ``update_every`` steps from ``start_step`` to
  ``end_step`` (:func:`netslim.schedules.agp_sparsity`).

Unstructured configs re-mask at the cumulative ratio. Structural configs (channels, heads, FFN
neurons) remove physically, so each step removes ``1 - (1 - s_t) / (1 - s_prev)`` of what is left.
An auto ``reconstruct`` (``None``) resolves as for a prune job that fine-tunes: channels are
refitted on the framework's batches, masks are not (``netslim.reconstruct.auto_reconstruct``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from netslim.core.config import choice
from netslim.errors import ConfigError
from netslim.training.optim_state import shrink_optimizer_state, take_replacements

SCHEDULES = ("oneshot", "iterative", "agp")
DEFAULT_END = 0.8  # of the planned steps: the last fifth of training recovers at the final ratio


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside a framework wrapper (accelerate's ``.optimizer``, Lightning's
    ``._optimizer``), whose ``state`` and ``param_groups`` are the ones to edit."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    return optimizer


_LABEL_KEYS = ("labels", "label", "label_ids")


def example_from_batch(batch: Any, rows: int = 2) -> Any:
    """The inputs of a training batch (labels dropped), cut to ``rows`` samples: what a
    structural trace needs, taken from the data the framework is already feeding."""
    if isinstance(batch, Mapping):  # a dict, or transformers' BatchEncoding (a UserDict)
        return {k: v[:rows] for k, v in batch.items() if k not in _LABEL_KEYS}
    if isinstance(batch, (tuple, list)):
        return (batch[0][:rows],)
    return (batch[:rows],)


def _is_structural(config: Any) -> bool:
    from netslim.structural.config import Channels

    return isinstance(config, Channels)


def _resolve_reconstruct(config: Any, calibration: Any) -> Any:
    """Training goes on after every prune of a session, so an auto (``None``) ``reconstruct``
    resolves as the prune job's does with fine-tuning (``auto_reconstruct(...,
    finetunes_after=True)``: channels refit with data, unstructured masks do not), not as a
    lone ``prune_`` call, after which nothing fine-tunes."""
    from netslim.reconstruct import auto_reconstruct
    from netslim.unstructured.config import Unstructured

    structural = _is_structural(config)
    if not (structural or isinstance(config, Unstructured)) or config.reconstruct is not None:
        return config
    refit = auto_reconstruct(
        None,
        method_kind="channel" if structural else "unstructured",
        has_calibration=calibration is not None,
        finetunes_after=True,
    )
    return replace(config, reconstruct=refit)


@dataclass
class PruningSession:
    """When and how much to prune during training; see the module docstring.

    ``config`` is any netslim method config (``Unstructured``, ``Channels``, ...); its ``ratio``
    is the final sparsity. Iterative and AGP schedules need a ratio-based ``Unstructured`` or
    ``Channels`` config. ``end_step`` defaults to 80% of the planned steps given to
    :meth:`plan`; ``update_every`` (AGP) to a tenth of the window. ``example_inputs`` (for
    structural tracing) may instead come from the framework's first batch.
    """

    config: Any
    schedule: str = "oneshot"
    start_step: int = 0
    end_step: int | None = None
    rounds: int = 3
    update_every: int | None = None
    example_inputs: Any = None
    prune_kwargs: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        choice("schedule", self.schedule, SCHEDULES)
        ratio = getattr(self.config, "ratio", None)
        if self.schedule != "oneshot":
            from netslim.unstructured.config import Unstructured

            if not isinstance(self.config, Unstructured) and not _is_structural(self.config):
                raise ConfigError(
                    f"the {self.schedule} schedule drives Unstructured or Channels configs, "
                    f"got {type(self.config).__name__}; use schedule='oneshot'"
                )
            if _is_structural(self.config) and any(
                getattr(self.config, t) is not None
                for t in ("target_macs", "target_params", "target_latency_ms")
            ):
                raise ConfigError(
                    f"the {self.schedule} schedule raises the ratio step by step; a MACs, "
                    "parameter or latency target is reached in one step: use schedule='oneshot'"
                )
            if getattr(self.config, "nm", None) is not None:
                raise ConfigError("N:M sparsity is reached in one step: use schedule='oneshot'")
        for name in ("start_step", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
        if self.schedule == "iterative" and self.rounds < 1:
            raise ConfigError("the iterative schedule needs rounds >= 1")
        self._final = ratio
        self._events: list[tuple[int, float | None]] | None = None
        self._reached = 0.0

    # ---- planning ----------------------------------------------------------------------------
    def plan(self, total_steps: int | None) -> list[tuple[int, float | None]]:
        """The (step, cumulative ratio) events for a run of ``total_steps`` optimizer steps.

        A ratio of None (a oneshot config without a ratio, e.g. a MACs target) prunes as the
        config says.
        """
        from netslim.schedules import agp_sparsity, iterative_ratios

        if self.schedule == "oneshot":
            self._events = [(self.start_step, self._final)]
            return list(self._events)
        end = self.end_step
        if end is None:
            if not total_steps:
                raise ConfigError(
                    f"the {self.schedule} schedule needs end_step (the training length is unknown)"
                )
            end = max(self.start_step + 1, int(DEFAULT_END * total_steps))
        if end <= self.start_step:
            raise ConfigError(f"end_step ({end}) must be after start_step ({self.start_step})")
        window = end - self.start_step
        if self.schedule == "iterative":
            ratios = iterative_ratios(self._final, self.rounds)
            steps = [self.start_step + (i * window) // self.rounds for i in range(self.rounds)]
            self._events = list(zip(steps, ratios, strict=True))
        else:
            every = self.update_every or max(1, window // 10)
            steps = [*range(self.start_step + every, end, every), end]
            events = [
                (
                    s,
                    agp_sparsity(
                        s, s_init=0.0, s_final=self._final, start_step=self.start_step, end_step=end
                    ),
                )
                for s in steps
            ]
            self._events = [(s, r) for s, r in events if r > 0]
        return list(self._events)

    @property
    def done(self) -> bool:
        return self._events is not None and not self._events

    # ---- running -----------------------------------------------------------------------------
    def on_step(
        self,
        model: nn.Module,
        step: int,
        *,
        optimizer: Any = None,
        example_inputs: Any = None,
        train_loader: Any = None,
    ) -> list[dict[str, Any]]:
        """Prune if an event is due at ``step`` (optimizer steps done so far); returns what ran.

        ``optimizer`` (one, a list, or None) gets the state of replaced parameters handed over.
        """
        if self._events is None:
            self.plan(None)
        ran = []
        while self._events and self._events[0][0] <= step:
            at, ratio = self._events.pop(0)
            # Only the latest due target matters when several are due at once.
            if self._events and self._events[0][0] <= step:
                continue
            ran.append(self._prune(model, at, ratio, optimizer, example_inputs, train_loader, step))
        return ran

    def finish(
        self, model: nn.Module, *, optimizer: Any = None, example_inputs: Any = None
    ) -> list[dict[str, Any]]:
        """Apply the final target if training stopped before it was reached."""
        if not self._events:
            return []
        at, ratio = self._events[-1]
        self._events = [(0, ratio)]
        return self.on_step(model, at, optimizer=optimizer, example_inputs=example_inputs)

    def _prune(
        self,
        model: nn.Module,
        at: int,
        ratio: float | None,
        optimizer: Any,
        example_inputs: Any,
        train_loader: Any,
        step: int,
    ) -> dict[str, Any]:
        from netslim.api import prune_

        config = self.config
        if ratio is not None and ratio <= self._reached:
            return {"step": step, "ratio": ratio, "skipped": "already reached"}
        if ratio is not None:
            applied = ratio
            if _is_structural(config):
                applied = 1.0 - (1.0 - ratio) / (1.0 - self._reached)
            config = replace(config, ratio=applied)
        config = _resolve_reconstruct(config, self.prune_kwargs.get("calibration", train_loader))
        example = self.example_inputs if self.example_inputs is not None else example_inputs
        take_replacements(model)  # only the swaps of this prune are handed over
        summary = prune_(
            model,
            config,
            example_inputs=example,
            train_loader=train_loader,
            **self.prune_kwargs,
        )
        replacements = take_replacements(model)
        optimizers = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
        replaced = sum(
            shrink_optimizer_state(_unwrap(opt), replacements)
            for opt in optimizers
            if opt is not None
        )
        if ratio is not None:
            self._reached = ratio
        record = {"step": step, "planned_step": at, "ratio": ratio, "optimizer_params": replaced}
        self.history.append(record)
        return {**record, "summary": summary}
