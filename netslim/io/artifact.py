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
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from netslim.core.files import atomic_directory, atomic_write, atomic_write_text
from netslim.core.history import get_history, get_spec, set_history, set_spec
from netslim.errors import ArtifactError, ConfigError
from netslim.io import sparse as sparse_io
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
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    spec: dict[str, Any] | None = None,
    sparse: bool = True,
) -> Path:
    """Write ``model`` (spec + history + safetensors weights) to ``directory``.

    The directory is written whole and swapped into place (``netslim.core.files.atomic_directory``): a save that
    is interrupted, even by SIGKILL, leaves the previous artifact there intact. Mostly-zero
    weights are stored as a bitmap plus values (``sparse=False`` stores every tensor dense).
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
    if out.exists() and not out.is_dir():
        raise ConfigError(f"cannot save to {out}: it exists and is not a directory")
    tensors, packed = _storable_state(model)
    stored, sparse_keys = _sparse_form(tensors) if sparse else (tensors, {})
    from netslim._version import __version__

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "netslim_version": __version__,
        "spec": spec,
        "history": get_history(model),
    }
    if packed:
        manifest["packed"] = packed
    if sparse_keys:
        manifest["sparse"] = sparse_keys
    ours = {MANIFEST, WEIGHTS}
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        # someone else's folder: write our two files into it (each atomically, manifest last)
        _write_files(out, stored, manifest)
        return out
    with atomic_directory(out) as staging:
        if out.is_dir():  # files someone put beside the artifact stay with it
            for entry in out.iterdir():
                if entry.name not in ours:
                    copy = shutil.copytree if entry.is_dir() else shutil.copy2
                    copy(entry, staging / entry.name)
        _write_files(staging, stored, manifest)
    return out


def _write_files(directory: Path, tensors: dict[str, torch.Tensor], manifest: dict) -> None:
    weights = atomic_write(directory / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    manifest = {**manifest, "files": {WEIGHTS: _sha256(weights)}}
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2))


def _sparse_form(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Mostly-zero tensors as bitmap + values (``netslim.io.sparse``); returns their shapes."""
    out: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for key, tensor in tensors.items():
        parts = sparse_io.pack(key, tensor)
        if parts is None:
            out[key] = tensor
        else:
            out.update(parts)
            shapes[key] = list(tensor.shape)
    return out, shapes


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
    for key, kind in (("spec", (dict, str)), ("history", list), ("files", dict)):
        if key not in manifest:
            raise ArtifactError(f"{manifest_path} lacks {key!r}")
        if not isinstance(manifest[key], kind):
            raise ArtifactError(f"{manifest_path}: {key!r} is not {_KIND_NAMES[key]}")
    return manifest


_KIND_NAMES = {"spec": "a model spec", "history": "a list of steps", "files": "an object"}


def load(directory: str | os.PathLike, *, trust_code: bool = False) -> nn.Module:
    """Rebuild a model saved with :func:`save`, in eval mode, with its history attached.

    A model whose spec is ``py:FILE:FACTORY`` is rebuilt by running FILE: that happens only with
    ``trust_code=True``; otherwise :class:`~netslim.errors.UntrustedCodeError` names the file,
    before anything is imported or read beyond the manifest.
    """
    from netslim.models.spec import build_from_spec

    path = Path(directory)
    manifest = read_manifest(path)
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise ArtifactError(f"{path} has no {WEIGHTS}")
    expected = manifest["files"].get(WEIGHTS)
    if expected and _sha256(weights_path) != expected:
        raise ArtifactError(f"{weights_path} does not match its checksum: the file is corrupt")
    from netslim.models.spec import code_to_run

    if not trust_code and isinstance(manifest["spec"], dict) and code_to_run(manifest["spec"]):
        build_from_spec(manifest["spec"], origin=str(path / MANIFEST))  # raises: names the file
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{weights_path} is not readable safetensors: {exc}") from exc

    sparse_keys = manifest.get("sparse", {})
    if not isinstance(sparse_keys, dict):
        raise ArtifactError(f"{path / MANIFEST}: 'sparse' is not an object")
    for key, shape in sparse_keys.items():
        state[key] = sparse_io.unpack(state, key, shape)
    spec = manifest["spec"]
    model = build_from_spec(spec, trust_code=trust_code, origin=str(path / MANIFEST))
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
