"""Round-by-round checkpoints of a lottery search, so a long search resumes where it stopped.

Layout of a checkpoint directory::

    run.json               format, version and the run's fingerprint (model, settings, data)
    rewind.safetensors     the weights rewinding restores (step k of the dense run)
    round_00/              the dense run;  round_01/ ... one per IMP round
        model.safetensors  trained weights + mask buffers (the ticket's mask is in there)
        rng.safetensors    torch (CPU and CUDA) generator states at the end of the round
        round.json         metrics of the ticket and the controls, Python/NumPy RNG states

A round directory is written under a temporary name and renamed, so it exists only when
complete. Resuming checks the fingerprint first: a directory from another model or other
settings is a ConfigError, raised before anything is written, never a silent restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from netslim.core.files import atomic_directory, atomic_write, atomic_write_text
from netslim.core.rng import capture_rng, restore_rng
from netslim.errors import ArtifactError, ConfigError

FORMAT = "netslim-lottery"
VERSION = 1
RUN = "run.json"
REWIND = "rewind.safetensors"
MODEL = "model.safetensors"
RNG = "rng.safetensors"
ROUND = "round.json"


def round_name(index: int) -> str:
    return f"round_{index:02d}"


def _plain(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors wants contiguous CPU tensors that share no storage."""
    return {key: value.detach().cpu().clone().contiguous() for key, value in state.items()}


def _read(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable lottery checkpoint: {exc}") from exc


class Checkpoints:
    """Reads and writes one checkpoint directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    def completed(self, fingerprint: dict[str, Any]) -> int:
        """How many rounds (dense run included) are saved; 0 for a new or empty directory.
        Raises ConfigError if the directory belongs to another run, without writing."""
        d = self.directory
        if d.exists() and not d.is_dir():
            raise ConfigError(f"checkpoint path {d} exists and is not a directory")
        if not d.is_dir() or not any(d.iterdir()):
            return 0
        run_path = d / RUN
        if not run_path.is_file():
            raise ConfigError(
                f"{d} is not empty and holds no lottery checkpoint ({RUN}); choose another directory"
            )
        try:
            saved = json.loads(run_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{run_path} is corrupt: {exc}") from exc
        if saved.get("format") != FORMAT or saved.get("version") != VERSION:
            raise ConfigError(f"{run_path} is not a version-{VERSION} lottery checkpoint")
        _compare(saved.get("fingerprint", {}), fingerprint, d)
        count = 0
        while (d / round_name(count) / ROUND).is_file():
            count += 1
        if count and not (d / REWIND).is_file():
            raise ArtifactError(f"{d} lacks {REWIND}: the checkpoint is incomplete")
        return count

    def start(self, fingerprint: dict[str, Any], rewind: dict[str, Tensor]) -> None:
        """Write the fingerprint and the rewind weights (once, before round 0 is saved)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.directory / REWIND, lambda tmp: save_file(_plain(rewind), str(tmp)))
        payload = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint}
        atomic_write_text(self.directory / RUN, json.dumps(payload, indent=2))

    def save_round(self, index: int, model: nn.Module, record: dict[str, Any]) -> Path:
        """Write round ``index`` (weights, masks, RNG, metrics) atomically."""
        final = self.directory / round_name(index)  # a stale copy from a crash is replaced
        with atomic_directory(final) as tmp:
            save_file(_plain(model.state_dict()), str(tmp / MODEL))
            meta, tensors = capture_rng()
            save_file(_plain(tensors), str(tmp / RNG))
            (tmp / ROUND).write_text(json.dumps({"record": record, "rng": meta}, indent=2))
        return final

    def rewind(self) -> dict[str, Tensor]:
        return _read(self.directory / REWIND)

    def weights(self, index: int) -> dict[str, Tensor]:
        return _read(self.directory / round_name(index) / MODEL)

    def record(self, index: int) -> dict[str, Any]:
        return json.loads((self.directory / round_name(index) / ROUND).read_text())["record"]

    def restore_rng(self, index: int) -> None:
        folder = self.directory / round_name(index)
        restore_rng(json.loads((folder / ROUND).read_text())["rng"], _read(folder / RNG))

    def fingerprint(self) -> dict[str, Any]:
        return json.loads((self.directory / RUN).read_text())["fingerprint"]


def _compare(saved: dict[str, Any], current: dict[str, Any], directory: Path) -> None:
    """Name the first setting that differs, e.g. ``config.rate`` or ``model.source``."""
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            sub = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            key, old, new = f"{key}.{sub}", old.get(sub), new.get(sub)
        raise ConfigError(
            f"{directory} holds a lottery checkpoint of another run ({key}: saved {_short(old)}, "
            f"now {_short(new)}); resume with the same model and settings or use a new directory"
        )


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
