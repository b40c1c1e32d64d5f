"""Export any round of a checkpointed search as a normal netslim result.

The exported directory is what ``netslim.save`` writes (spec + a ``masks`` history record +
safetensors weights), so ``netslim.load`` rebuilds the model with its masks attached and
``netslim eval`` measures it like any pruned model. ``weights="trained"`` exports the ticket
after its retraining (the usable sparse network); ``"rewind"`` the untrained ticket itself:
the mask over the rewound weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from netslim.core.config import choice
from netslim.core.history import record
from netslim.errors import ArtifactError, ConfigError
from netslim.io import save
from netslim.lottery.checkpoint import Checkpoints, round_name
from netslim.lottery.procedure import assign
from netslim.unstructured.method import HISTORY_KIND, apply_masks

WEIGHTS = ("trained", "rewind")


def saved_rounds(checkpoint_dir: str | os.PathLike[str]) -> int:
    """Number of saved rounds (the dense run counts as round 0)."""
    ck = Checkpoints(checkpoint_dir)
    return ck.completed(ck.fingerprint()) if (Path(checkpoint_dir) / "run.json").is_file() else 0


def export_ticket(
    checkpoint_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    round: int | None = None,
    weights: str = "trained",
    trust_code: bool = False,
) -> Path:
    """Write round ``round`` (default: the last saved) of the search to ``out``.

    A ``py:`` model spec in the checkpoints runs its file only with ``trust_code=True``."""
    choice("weights", weights, WEIGHTS)
    count = saved_rounds(checkpoint_dir)
    if count == 0:
        raise ArtifactError(f"{checkpoint_dir} holds no saved lottery round")
    index = count - 1 if round is None else round
    if not 0 <= index < count:
        raise ConfigError(f"round must be in [0, {count - 1}] for {checkpoint_dir}, got {round}")
    ck = Checkpoints(checkpoint_dir)
    model_info = ck.fingerprint()["model"]
    spec = model_info.get("spec")
    if not spec:
        raise ConfigError(
            "the searched model has no netslim spec, so load() could not rebuild it: build it "
            "with netslim.build_model, or save the live model with netslim.save(model, dir, spec=...)"
        )
    from netslim.models.spec import build_from_spec

    model = build_from_spec(spec, trust_code=trust_code, origin=str(checkpoint_dir))
    targets = list(model_info["masked"])
    ones = {}
    for key in targets:
        path, _, name = key.rpartition(".")
        tensor = getattr(model.get_submodule(path) if path else model, name)
        ones[key] = torch.ones_like(tensor, dtype=torch.bool)
    apply_masks(model, ones)
    try:
        model.load_state_dict(ck.weights(index))
    except RuntimeError as exc:
        raise ArtifactError(f"{round_name(index)} does not fit {spec['source']}: {exc}") from exc
    if weights == "rewind":
        assign(model, ck.rewind())
    config = ck.fingerprint()["config"]
    payload = {"method": "lottery", "round": index, "weights": weights, **config}
    record(model, HISTORY_KIND, {"targets": targets, "config": payload})
    return save(model.eval(), out)
