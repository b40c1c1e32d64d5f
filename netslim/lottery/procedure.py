"""Iterative magnitude pruning with rewinding, and its controls (Frankle & Carbin, ICLR 2019).

Round 0 trains the dense network for T steps and keeps a copy of its weights after k steps.
Round r prunes ``rate`` of the remaining weights of the trained network (the mask maker
decides which), rewinds the survivors to the step-k weights (or, with learning-rate rewinding,
keeps them and replays the schedule from k) and retrains T - k steps under the fixed mask.
Controls retrain the same budget at the ticket's sparsity; comparing them is the experiment.

The model carries a mask on every target from the start (all ones in round 0), so its state
dict has the same keys in every round, checkpoint and control.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from netslim.core.history import get_spec, record
from netslim.core.masks import attach_mask, canonical_name, get_mask
from netslim.errors import ArtifactError, ConfigError, UnsupportedModelError
from netslim.lottery.checkpoint import Checkpoints
from netslim.lottery.config import Lottery
from netslim.lottery.loop import is_mask_key, phase_seed, train_phase
from netslim.lottery.makers import get_maker
from netslim.measure import effective_named_parameters
from netslim.unstructured.method import HISTORY_KIND, apply_masks
from netslim.unstructured.targets import find_targets, prunable_modules

RoundHook = Callable[[dict[str, Any]], None]


def assign(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` into the model's tensors in place (bit for bit; optimizers stay valid)."""
    current = model.state_dict()
    unknown = [key for key in state if key not in current]
    if unknown:
        raise ArtifactError(f"saved tensors do not fit the model: {', '.join(unknown[:3])}")
    with torch.no_grad():
        for key, value in state.items():
            current[key].copy_(value)


class LotteryRun:
    """One lottery-ticket search over ``model`` (trained in place).

    ``val_loader`` gives the early-stopping iteration (without it the test set stands in);
    ``checkpoint_dir`` makes every round resumable; ``factory()`` builds fresh weights for the
    reinit control (default: rebuild from the model's netslim spec); ``on_round(record)`` is
    called after each round is saved. All settings are checked here, before anything runs or
    is written.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Lottery,
        train_loader: Iterable[Any],
        *,
        val_loader: Iterable[Any] | None = None,
        test_loader: Iterable[Any] | None = None,
        checkpoint_dir: str | Path | None = None,
        factory: Callable[[], nn.Module] | None = None,
        on_round: RoundHook | None = None,
    ):
        if not isinstance(config, Lottery):
            raise ConfigError(f"LotteryRun needs a Lottery config, got {type(config).__name__}")
        if val_loader is None and test_loader is None:
            raise ConfigError("a lottery run compares accuracies: give val_loader or test_loader")
        self.model, self.config = model, config
        self.loaders = (train_loader, val_loader, test_loader)
        self.total = config.total_steps(_length(train_loader))
        config.check_length(self.total)
        self.maker = get_maker(config.masks)
        targets = find_targets(model, ignore=config.ignore, include_classifier=True)
        classifier = prunable_modules(model)[-1][0]
        self.classifier = [t.key for t in targets if t.module_name == classifier]
        self.body = [t.key for t in targets if t.module_name != classifier]
        if not self.body:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no Linear/Conv weights besides the classifier to prune"
            )
        if self.maker.removes_outputs and config.classifier_rate:
            raise ConfigError(
                f"{config.masks} masks remove whole outputs: on the classifier that deletes "
                "classes, so leave classifier_rate unset (the classifier stays dense)"
            )
        self.head_rate = 0.0 if self.maker.removes_outputs else config.output_rate
        self.spec = get_spec(model)
        if "reinit" in config.controls and factory is None and self.spec is None:
            raise ConfigError(
                "the reinit control needs fresh weights: pass factory= or build the model with "
                "netslim.build_model"
            )
        self.factory = factory
        self.on_round = on_round
        self.fingerprint = self._fingerprint(train_loader)
        self.checkpoints = Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
        self.saved = self.checkpoints.completed(self.fingerprint) if self.checkpoints else 0
        self.rewind: dict[str, Tensor] = {}
        self.dense: dict[str, Tensor] = {}

    # ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run (or resume) every round; returns the JSON-ready result (see ``result``)."""
        self.prepare()
        cfg, ck = self.config, self.checkpoints
        if self.saved:
            assert ck is not None
            last = min(self.saved, cfg.rounds + 1) - 1
            self.rewind, self.dense = ck.rewind(), _unmasked(ck.weights(0))
            records = [ck.record(i) for i in range(last + 1)]
            self.model.load_state_dict(ck.weights(last))
            ck.restore_rng(last)
        else:
            records = [self.dense_round()]
        for index in range(len(records), cfg.rounds + 1):
            rec = self._round(index)
            if ck is not None:
                ck.save_round(index, self.model, rec)
            records.append(rec)
            if self.on_round is not None:
                self.on_round(rec)
        return self.result(records)

    def result(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "config": self.config.as_record(),
            "iterations": self.total,
            "masked": self.body + self.classifier,
            "dense": records[0],
            "rounds": records[1:],
        }

    # ------------------------------------------------------------------------------------------

    def _fingerprint(self, train_loader: Iterable[Any]) -> dict[str, Any]:
        config = self.config.as_record()
        config.pop("rounds")  # more rounds may be added to a finished search
        dataset = getattr(train_loader, "dataset", None)
        return {
            "model": {
                "spec": self.spec,
                "tensors": {n: list(t.shape) for n, t in effective_named_parameters(self.model)},
                "masked": self.body + self.classifier,
            },
            "config": config,
            "data": {
                "batches_per_epoch": _length(train_loader),
                "samples": len(dataset) if hasattr(dataset, "__len__") else None,
                "iterations": self.total,
            },
        }

    def prepare(self) -> None:
        """All-ones masks on the targets that have none, recorded so ``netslim.save`` works."""
        new = {}
        for key in self.body + self.classifier:
            module, name = self._tensor(key)
            if get_mask(module, name) is None:
                new[key] = torch.ones_like(getattr(module, name), dtype=torch.bool)
        if new:
            apply_masks(self.model, new)
            payload = {"method": "lottery", **self.config.as_record()}
            record(self.model, HISTORY_KIND, {"targets": list(new), "config": payload})

    def _tensor(self, key: str) -> tuple[nn.Module, str]:
        path, _, name = key.rpartition(".")
        return (self.model.get_submodule(path) if path else self.model), name

    def masks(self) -> dict[str, Tensor]:
        out = {}
        for key in self.body + self.classifier:
            mask = get_mask(*self._tensor(key))
            assert mask is not None
            out[key] = mask.detach().clone()
        return out

    def _set_masks(self, masks: dict[str, Tensor]) -> None:
        for key, mask in masks.items():
            attach_mask(*self._tensor(key), mask)

    def _weights(self) -> dict[str, Tensor]:
        return {key: getattr(*self._tensor(key)).detach() for key in self.body + self.classifier}

    def _train(self, phase: str, start: int, capture_at: int | None = None):
        train_loader, val_loader, test_loader = self.loaders
        return train_phase(
            self.model,
            train_loader,
            self.config,
            phase=phase,
            start=start,
            total=self.total,
            val_loader=val_loader,
            test_loader=test_loader,
            capture_at=capture_at,
        )

    def dense_round(self) -> dict[str, Any]:
        phase, rewind = self._train("dense", 0, capture_at=self.config.rewind_iter)
        assert rewind is not None
        self.rewind, self.dense = rewind, _unmasked(self.model.state_dict())
        rec = {
            "round": 0,
            **self._sparsity(self.masks()),
            "ticket": phase.summary(),
            "controls": {},
        }
        if self.checkpoints is not None:
            self.checkpoints.start(self.fingerprint, rewind)
            self.checkpoints.save_round(0, self.model, rec)
        if self.on_round is not None:
            self.on_round(rec)
        return rec

    def start_round(self, index: int) -> dict[str, Tensor]:
        """Prune the trained weights, rewind, fix the new masks; returns them (keep = True)."""
        cfg, maker = self.config, self.maker
        masks, weights = self.masks(), self._weights()
        body = {k: masks[k] for k in self.body}
        new = maker.prune({k: weights[k] for k in self.body}, body, cfg.rate, cfg.scope)
        head = {k: masks[k] for k in self.classifier}
        if head and self.head_rate > 0:
            head = maker.prune({k: weights[k] for k in head}, head, self.head_rate, "layer")
        new.update(head)
        if cfg.rewind == "weights":
            assign(self.model, self.rewind)
        self._set_masks(new)
        return new

    def _round(self, index: int) -> dict[str, Any]:
        cfg = self.config
        new = self.start_round(index)
        ticket, _ = self._train(f"round{index}/ticket", cfg.rewind_iter)
        rec = {"round": index, **self._sparsity(new), "ticket": ticket.summary(), "controls": {}}
        if cfg.controls:
            trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            for name in cfg.controls:
                rec["controls"][name] = self._control(name, index, new)
            assign(self.model, trained)
        return rec

    def _control(self, name: str, index: int, ticket: dict[str, Tensor]) -> dict[str, Any]:
        if name == "reinit":
            assign(self.model, self._fresh(index))
            self._set_masks(ticket)
        elif name == "random_mask":
            assign(self.model, self.rewind)
            generator = torch.Generator().manual_seed(
                phase_seed(self.config.seed, f"round{index}/mask")
            )
            self._set_masks(self.maker.random_like(ticket, generator))
        else:  # magnitude: one-shot prune the trained dense net to the ticket's unit counts
            assign(self.model, self.dense)
            self._set_masks(self._magnitude_masks(ticket))
        phase, _ = self._train(f"round{index}/{name}", self.config.rewind_iter)
        return {**self._sparsity(self.masks()), **phase.summary()}

    def _magnitude_masks(self, ticket: dict[str, Tensor]) -> dict[str, Tensor]:
        maker = self.maker
        ones = {k: torch.ones_like(m, dtype=torch.bool) for k, m in ticket.items()}
        dense = self.dense_weights()
        units, kept = maker.kept_units(ones), maker.kept_units(ticket)
        drop = {k: units[k] - kept[k] for k in ticket}
        body_drop: int | dict[str, int] = {k: drop[k] for k in self.body}
        if self.config.scope == "global":
            body_drop = sum(drop[k] for k in self.body)
        out = maker.select(dense, {k: ones[k] for k in self.body}, body_drop)
        if self.classifier:
            head = {k: ones[k] for k in self.classifier}
            out.update(maker.select(dense, head, {k: drop[k] for k in self.classifier}))
        return out

    def dense_weights(self) -> dict[str, Tensor]:
        """The trained dense weights of the masked targets, by target key."""
        out = {}
        for key, value in self.dense.items():
            plain = canonical_name(key)
            if plain in self.body or plain in self.classifier:
                out[plain] = value
        return out

    def _fresh(self, index: int) -> dict[str, Tensor]:
        """Newly initialised weights (the model's own init distribution), keyed like ours."""
        torch.manual_seed(phase_seed(self.config.seed, f"round{index}/reinit-init"))
        if self.factory is not None:
            fresh = self.factory()
        else:
            from netslim.models.spec import build_model

            assert self.spec is not None
            fresh = build_model(self.spec["source"], **self.spec.get("kwargs", {}))
        state = fresh.state_dict()
        out = {}
        for key in self.rewind:
            plain = canonical_name(key)
            if plain not in state or state[plain].shape != self.rewind[key].shape:
                raise ConfigError(f"the reinit factory builds a different model (no {plain!r})")
            out[key] = state[plain]
        return out

    def _sparsity(self, masks: dict[str, Tensor]) -> dict[str, Any]:
        kept = {k: int(m.count_nonzero()) for k, m in masks.items()}
        total = sum(m.numel() for m in masks.values())
        return {
            "weights_remaining": sum(kept.values()) / total,
            "layers": {k: kept[k] / masks[k].numel() for k in masks},
        }


def _unmasked(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in state.items() if not is_mask_key(k)}


def _length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def run_lottery(
    model: nn.Module, config: Lottery, train_loader: Iterable[Any], **kwargs: Any
) -> dict[str, Any]:
    """``LotteryRun(model, config, train_loader, **kwargs).run()``."""
    return LotteryRun(model, config, train_loader, **kwargs).run()
