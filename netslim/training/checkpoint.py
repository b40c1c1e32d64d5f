"""Periodic checkpoints and exact resume for long runs (pre-training, fine-tuning, AGP).

A run is a journal of *stages* (train, measure, prune, fine-tune, ...). A checkpoint is taken
inside a training stage every ``every`` optimizer steps and holds everything the rest of the run
depends on: the model (netslim format: spec + history + safetensors, so masks come back), the
teacher, the optimizer and LR-scheduler state, the RNG states of Python, NumPy and torch, the
data position (epoch, batches done) and the results of the stages already finished. Resuming
skips the finished stages (their results come from the journal), reloads the state and continues
the interrupted stage at the next batch, so a resumed run ends bit-identical to an uninterrupted
one (single process, deterministic kernels).

On disk (tensors in safetensors, everything else JSON, no pickles)::

    DIR/latest.json            {"checkpoint": "ckpt-000003"}   (replaced atomically)
    DIR/ckpt-000003/state.json journal, position, fingerprint, scheduler, scalar state
    DIR/ckpt-000003/state.safetensors   optimizer moments, torch RNG states
    DIR/ckpt-000003/model/     netslim.save() of the model (and teacher/ when distilling)

A checkpoint directory is written under a temporary name and renamed into place before
``latest.json`` points at it, so a ``kill -9`` at any moment leaves the previous checkpoint valid.
Only rank 0 writes; every rank reads the same directory on resume.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from netslim.core import rng
from netslim.core.files import atomic_directory, atomic_write_text
from netslim.errors import ArtifactError, ConfigError

LATEST = "latest.json"
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
FORMAT_VERSION = 1


def capture_rng() -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The shared RNG snapshot (``netslim.core.rng``), its tensors stored under ``rng/``."""
    meta, tensors = rng.capture_rng()
    return meta, {f"rng/{key}": value for key, value in tensors.items()}


def restore_rng(meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    rng.restore_rng(
        meta, {k.removeprefix("rng/"): v for k, v in tensors.items() if k.startswith("rng/")}
    )


# ---------------------------------------------------------------- optimizer state by name


def _param_names(model: nn.Module) -> dict[int, str]:
    from netslim.core.masks import canonical_name

    return {id(p): canonical_name(n) for n, p in model.named_parameters()}


def optimizer_state(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The optimizer's state keyed by parameter *name*, not position.

    Positions change when masks are attached (parametrize moves ``weight`` after ``bias``), so a
    rebuilt model's optimizer lists the same parameters in another order; names do not change.
    """
    names = _param_names(model)
    groups, scalars, tensors = [], {}, {}
    for group in optimizer.param_groups:
        missing = [p for p in group["params"] if id(p) not in names]
        if missing:
            raise ConfigError("the optimizer holds parameters that are not in the model")
        entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        entry["params"] = [names[id(p)] for p in group["params"]]
        groups.append(entry)
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, Tensor):
                    tensors[f"optim/{names[id(p)]}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(names[id(p)], {})[key] = value
    return {"groups": groups, "scalars": scalars}, tensors


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    meta: dict[str, Any],
    tensors: dict[str, Tensor],
) -> None:
    names = _param_names(model)
    current = [[names.get(id(p)) for p in g["params"]] for g in optimizer.param_groups]
    saved = [g["params"] for g in meta["groups"]]
    if [sorted(map(str, c)) for c in current] != [sorted(s) for s in saved]:
        raise ConfigError("the checkpoint's optimizer holds other parameters than this model")
    state: dict[int, dict[str, Any]] = {}
    groups = []
    index = 0
    for group, names_now, saved_group in zip(
        optimizer.param_groups, current, meta["groups"], strict=True
    ):
        ids = []
        for name in names_now:
            entry = dict(meta["scalars"].get(name, {}))
            prefix = f"optim/{name}/"
            entry.update({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            if entry:
                state[index] = entry
            ids.append(index)
            index += 1
        restored = {
            k: (tuple(v) if isinstance(group.get(k), tuple) else v) for k, v in saved_group.items()
        }
        restored["params"] = ids
        groups.append(restored)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------- the run checkpoint


def _json(value: Any) -> Any:
    """Round-trip through JSON so what is kept in memory equals what a resume reads back."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)


class RunCheckpoint:
    """Checkpoints of one run in ``directory``; ``resume=True`` continues the latest one.

    ``fingerprint`` (JSON) describes the settings that decide the result (model, method, ratio,
    seed, data, world size, ...); resuming with a different fingerprint is a ConfigError naming
    the settings that differ. ``every`` is in optimizer steps (0: only explicit saves; None:
    the interval of the run being resumed).
    ``after_save(path)`` runs on rank 0 after each checkpoint is committed.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every: int | None,
        fingerprint: dict[str, Any],
        resume: bool = False,
        keep: int = 2,
        after_save: Callable[[Path], None] | None = None,
    ):
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 0
        ):
            raise ConfigError(f"checkpoint interval must be an integer >= 0, got {every!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"keep must be a positive integer, got {keep!r}")
        self.directory = Path(directory)
        self.every, self.keep, self.after_save = every, keep, after_save
        self.fingerprint = _json(fingerprint)
        self.stages: list[dict[str, Any]] = []
        self._cursor = 0
        self._in_stage = False
        self._serial = 0
        self._extras: dict[str, Callable[[], Any]] = {}
        self._loaded: dict[str, Any] | None = None
        self._loaded_dir: Path | None = None
        self._pending: dict[str, Any] | None = None  # the interrupted stage's training state
        if resume:
            self._load()
        elif self.every is None:
            self.every = 0
        if not resume and self.latest() is not None:
            raise ConfigError(
                f"{self.directory} already holds checkpoints of a run: pass --resume "
                f"{self.directory} to continue it, or choose another directory"
            )

    # -- locating ----------------------------------------------------------------------------

    @staticmethod
    def find(directory: str | os.PathLike[str]) -> Path:
        """The checkpoint directory for a user's ``--resume DIR`` (DIR or DIR/checkpoints)."""
        path = Path(directory)
        for candidate in (path, path / "checkpoints"):
            if (candidate / LATEST).is_file():
                return candidate
        raise ConfigError(f"{path} holds no netslim checkpoint (no {LATEST}); nothing to resume")

    def latest(self) -> Path | None:
        pointer = self.directory / LATEST
        if not pointer.is_file():
            return None
        try:
            name = json.loads(pointer.read_text())["checkpoint"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{pointer} is corrupt: {exc}") from exc
        path = self.directory / name
        if not (path / STATE_JSON).is_file():
            raise ArtifactError(f"{pointer} points at {path}, which is missing or incomplete")
        return path

    @property
    def resuming(self) -> bool:
        return self._loaded is not None

    def _load(self) -> None:
        path = self.latest()
        if path is None:
            raise ConfigError(f"{self.directory} holds no netslim checkpoint; nothing to resume")
        try:
            state = json.loads((path / STATE_JSON).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path / STATE_JSON} is corrupt: {exc}") from exc
        if state.get("version") != FORMAT_VERSION:
            raise ArtifactError(f"{path} has checkpoint version {state.get('version')}")
        theirs = state.get("fingerprint", {})
        if theirs != self.fingerprint:
            keys = sorted(set(theirs) | set(self.fingerprint))
            diff = [
                f"{k}: {theirs.get(k)!r} there, {self.fingerprint.get(k)!r} now"
                for k in keys
                if theirs.get(k) != self.fingerprint.get(k)
            ]
            raise ConfigError(
                f"{self.directory} was written by a different run ({'; '.join(diff)}); "
                "resume with the same model, method and settings, or start a new run"
            )
        self._loaded, self._loaded_dir = state, path
        self._serial = int(state["serial"])
        self._pending = state.get("current")
        if self.every is None:
            self.every = int(state.get("every", 0))

    # -- journal -----------------------------------------------------------------------------

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` as the next stage, or return its recorded result if it finished before
        the checkpoint being resumed. Results must be JSON-serialisable."""
        if self._in_stage:
            raise ConfigError("checkpoint stages cannot be nested")
        index = self._cursor
        self._cursor += 1
        done = self._loaded["stages"] if self._loaded else []
        if index < len(done) and len(self.stages) == index:
            if done[index]["name"] != name:
                raise ConfigError(
                    f"the checkpoint's stage {index} is {done[index]['name']!r}, this run's "
                    f"is {name!r}: the job changed since the checkpoint was written"
                )
            self.stages.append(done[index])
            return done[index]["result"]
        self._in_stage = True
        try:
            result = _json(fn())
        finally:
            self._in_stage = False
        self.stages.append({"name": name, "result": result})
        return result

    def skipped(self, name: str) -> bool:
        """Whether the next :meth:`stage` named ``name`` will be skipped (already done)."""
        done = self._loaded["stages"] if self._loaded else []
        return self._cursor < len(done) and done[self._cursor]["name"] == name

    def track(self, name: str, get: Callable[[], Any], set_: Callable[[Any], None]) -> None:
        """Save ``get()`` (JSON) with every checkpoint of the current stage; when this stage is
        the one being resumed, hand the saved value to ``set_`` now (e.g. a schedule's state)."""
        self._extras[name] = get
        if self._pending is not None and self._pending["stage"] == self._stage_index():
            saved = self._pending.get("extras", {})
            if name in saved:
                set_(saved[name])

    def _stage_index(self) -> int:
        return self._cursor - 1 if self._in_stage else self._cursor

    # -- training hooks (called by netslim.training.train) -------------------------------------

    def begin_training(self) -> dict[str, Any] | None:
        """The interrupted training state if this is the training being resumed, else None.

        The returned dict has ``position`` (JSON), ``optimizer``/``lr_scheduler`` state, the
        RNG states, and ``tensors``/``model_state`` loaded from disk.
        """
        pending = self._pending
        if pending is None or pending["stage"] != self._stage_index():
            return None
        self._pending = None
        assert self._loaded_dir is not None
        tensors = load_file(str(self._loaded_dir / STATE_TENSORS))
        model_state = load_file(str(self._loaded_dir / "model" / "model.safetensors"))
        return {**pending, "tensors": tensors, "model_state": model_state}

    def due(self, steps: int) -> bool:
        return bool(self.every) and steps > 0 and steps % self.every == 0

    def save(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        position: dict[str, Any] | None = None,
        teacher: nn.Module | None = None,
    ) -> Path | None:
        """Commit a checkpoint (rank 0 only; other ranks return None without writing)."""
        from netslim.distributed.env import is_main

        if not is_main():
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        name = f"ckpt-{self._serial:06d}"
        final = self.directory / name  # a copy left by a run killed before `latest` is replaced
        with atomic_directory(final) as tmp:
            self._write(tmp, model, optimizer, lr_scheduler, position, teacher)
        atomic_write_text(self.directory / LATEST, json.dumps({"checkpoint": name}))
        self._prune_old(keep_name=name)
        if self.after_save is not None:
            self.after_save(final)
        return final

    def _write(
        self,
        tmp: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        lr_scheduler: Any,
        position: dict[str, Any] | None,
        teacher: nn.Module | None,
    ) -> None:
        _save_model(model, tmp / "model")
        if teacher is not None:
            _save_model(teacher, tmp / "teacher")
        rng_meta, tensors = capture_rng()
        current = None
        if position is not None:
            optim_meta = None
            if optimizer is not None:
                optim_meta, optim_tensors = optimizer_state(optimizer, model)
                tensors.update(optim_tensors)
            current = {
                "stage": self._stage_index(),
                "position": position,
                "optimizer": optim_meta,
                "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                "rng": rng_meta,
                "extras": {k: get() for k, get in self._extras.items()},
            }
        state = {
            "version": FORMAT_VERSION,
            "serial": self._serial,
            "every": self.every,
            "fingerprint": self.fingerprint,
            "stages": self.stages,
            "current": current,
            "rng": rng_meta,
        }
        save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(state, default=_json_default))
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())

    def _prune_old(self, keep_name: str) -> None:
        olds = sorted(p for p in self.directory.glob("ckpt-*") if p.name != keep_name)
        for path in olds[: max(0, len(olds) - (self.keep - 1))]:
            shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.glob(".ckpt-*"):  # temporaries of a killed writer
            shutil.rmtree(path, ignore_errors=True)

    # -- restoring models (the pipeline rebuilds them before running its stages) ----------------

    def load_model(self, name: str = "model") -> nn.Module | None:
        """The checkpoint's model (or ``"teacher"``) rebuilt by ``netslim.load``, in train mode."""
        if self._loaded_dir is None or not (self._loaded_dir / name).is_dir():
            return None
        from netslim.io import load
        from netslim.io.artifact import read_manifest

        # the model this run was started with may be a py: spec the user named themselves; a
        # checkpoint naming any other code file is not run without consent (netslim.load)
        spec = read_manifest(self._loaded_dir / name).get("spec") or {}
        ours = isinstance(spec, dict) and spec.get("source") == self.fingerprint.get("model")
        return load(self._loaded_dir / name, trust_code=ours).train()


def _save_model(model: nn.Module, directory: Path) -> None:
    """netslim format when the model has a spec (so load() can rebuild it), else bare weights."""
    from netslim.core.history import get_spec
    from netslim.io import save
    from netslim.io.artifact import _unshared_state_dict

    if get_spec(model) is not None:
        save(model, directory)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(_unshared_state_dict(model), str(directory / "model.safetensors"))


class NoCheckpoint:
    """Stand-in when checkpointing is off, so a job's code reads the same either way."""

    resuming = False
    every = 0

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        return fn()

    def skipped(self, name: str) -> bool:
        return False

    def track(self, name: str, get: Callable[[], Any], set_: Callable[[Any], None]) -> None:
        return None

    def load_model(self, name: str = "model") -> nn.Module | None:
        return None
