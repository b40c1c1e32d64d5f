"""The netslim directory format.

``netslim.json``  spec of the original model, the ordered history of transforms, checksums;
``model.safetensors``  the weights (including mask buffers while masks are attached).

Loading rebuilds the original from its spec, replays the history (which recreates the pruned
shapes and parametrizations) and then loads the weights strictly, so any drift is an error rather
than a silently different model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from netslim.core.files import atomic_write, atomic_write_text
from netslim.core.history import get_history, get_spec, set_history, set_spec
from netslim.errors import ArtifactError, ConfigError
from netslim.io.replay import replay

FORMAT = "netslim"
FORMAT_VERSION = 1
MANIFEST = "netslim.json"
WEIGHTS = "model.safetensors"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unshared_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The storable tensors of ``model`` (see :func:`_storable_state`)."""
    return _storable_state(model)[0]


def _storable_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """safetensors refuses aliased storage (tied weights): store each key as its own tensor.

    Tensor subclasses (torchao's int8 weights) are stored as their plain inner tensors,
    ``KEY::qdata``, ``KEY::scale``...; the second value lists them per key for :func:`load`.
    """
    seen: set[tuple[int, int]] = set()
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, list[str]] = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if type(tensor) is not torch.Tensor and hasattr(tensor, "__tensor_flatten__"):
            names, _ = tensor.__tensor_flatten__()
            packed[key] = list(names)
            for name in names:
                out[f"{key}::{name}"] = getattr(tensor, name).clone().contiguous()
            continue
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        out[key] = tensor.clone().contiguous() if ident in seen else tensor.contiguous()
        seen.add(ident)
    return out, packed


def _load_packed(model: nn.Module, state: dict[str, torch.Tensor], packed: dict) -> None:
    """Copy the inner tensors of each packed key into the rebuilt model's subclass tensor."""
    current = model.state_dict()
    for key, names in packed.items():
        target = current.get(key)
        if target is None or type(target) is torch.Tensor:
            raise ArtifactError(f"{key} is stored quantized but the rebuilt model's is not")
        for name in names:
            value = state.pop(f"{key}::{name}", None)
            inner = getattr(target, name, None)
            if value is None or inner is None or inner.shape != value.shape:
                raise ArtifactError(f"{key}::{name} is missing or does not fit the rebuilt model")
            with torch.no_grad():
                inner.copy_(value)


def save(
    model: nn.Module, directory: str | os.PathLike, *, spec: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (spec + history + safetensors weights) to ``directory``.

    Files are written to a temporary name and renamed, so an interrupted save never leaves a
    half-written artifact that ``load`` would accept.
    """
    spec = spec or get_spec(model)
    if spec is None and isinstance(model, torch.fx.GraphModule):
        raise ConfigError(
            "this is a captured graph (static int8 from torch.export), which netslim.save "
            "cannot rebuild from a spec: deploy it as ONNX (netslim.export.export_onnx, then "
            "quantize_onnx) or with torch.export.save; dynamic int8 models save normally"
        )
    if spec is None:
        raise ConfigError(
            "the model has no spec: build it with netslim.build_model('zoo:...') or pass "
            "spec={'source': 'py:FILE.py:FACTORY'} so that load() can rebuild it"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors, packed = _storable_state(model)
    atomic_write(out / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    from netslim._version import __version__

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "netslim_version": __version__,
        "spec": spec,
        "history": get_history(model),
        "files": {WEIGHTS: _sha256(out / WEIGHTS)},
    }
    if packed:
        manifest["packed"] = packed
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    return out


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a directory saved by netslim.save")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path} has no {MANIFEST}: not a netslim artifact, or incomplete")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is corrupt: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_path} is not a netslim manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{manifest_path} has format version {manifest.get('version')}, "
            f"this netslim reads version {FORMAT_VERSION}"
        )
    for key in ("spec", "history", "files"):
        if key not in manifest:
            raise ArtifactError(f"{manifest_path} lacks {key!r}")
    return manifest


def load(directory: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved with :func:`save`, in eval mode, with its history attached."""
    from netslim.models.spec import build_model

    path = Path(directory)
    manifest = read_manifest(path)
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise ArtifactError(f"{path} has no {WEIGHTS}")
    expected = manifest["files"].get(WEIGHTS)
    if expected and _sha256(weights_path) != expected:
        raise ArtifactError(f"{weights_path} does not match its checksum: the file is corrupt")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{weights_path} is not readable safetensors: {exc}") from exc

    spec = manifest["spec"]
    model = build_model(spec["source"], **spec.get("kwargs", {}))
    replay(model, manifest["history"])
    try:
        packed = manifest.get("packed", {})
        if packed:
            _load_packed(model, state, packed)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if unexpected or set(missing) - set(packed):
                raise RuntimeError(f"missing {sorted(set(missing) - set(packed))}, "
                                   f"unexpected {sorted(unexpected)}")  # fmt: skip
        else:
            model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(
            f"weights in {weights_path} do not fit the rebuilt model: {exc}"
        ) from exc
    set_spec(model, spec)
    set_history(model, manifest["history"])
    return model.eval()
