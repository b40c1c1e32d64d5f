"""Compress a (pruned) model into one ``.nsz`` file and rebuild it from there.

Stored: the spec and history (as in ``netslim.save``) and the *effective* tensors. A masked
weight is stored sparse with its mask as the positions, so the decoded model has the same masks;
the pre-mask values under pruned positions are dropped (they are zero after decoding), which does
not change what the model computes. Structurally pruned models are just smaller tensors here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor, nn

from netslim.compress import container
from netslim.compress.codec import decode_tensor, encode_tensor
from netslim.core.files import atomic_write_bytes
from netslim.core.history import get_history, get_spec, set_history, set_spec
from netslim.errors import ArtifactError, ConfigError
from netslim.measure.effective import effective_state_dict
from netslim.measure.size import saved_size_bytes

FORMAT = "netslim-compressed"


@dataclass
class CompressReport:
    """Sizes of one compressed artifact against the dense float32 safetensors checkpoint."""

    path: str
    bytes: int
    dense_fp32_bytes: int
    ratio: float
    values: str
    sparsity: float
    layouts: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _masks_by_key(model: nn.Module) -> dict[str, Tensor]:
    from netslim.core.masks import iter_masks

    return iter_masks(model)


def encode_state(
    tensors: dict[str, Tensor],
    masks: dict[str, Tensor],
    *,
    values: str,
    positions: str,
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Manifest entries (with blob offsets) and blobs for a dict of tensors."""
    entries, blobs, offset = [], [], 0
    for name, tensor in tensors.items():
        entry, parts = encode_tensor(
            tensor, mask=masks.get(name), values=values, positions=positions
        )
        entry["name"] = name
        entry["blobs"] = {}
        for part, data in parts.items():
            entry["blobs"][part] = [offset, len(data)]
            blobs.append(data)
            offset += len(data)
        entries.append(entry)
    return entries, blobs


def decode_state(
    manifest: dict[str, Any], area: memoryview, source: str
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Every tensor of an artifact, decoded; any inconsistency is an :class:`ArtifactError`."""
    out: dict[str, tuple[Tensor, Tensor | None]] = {}
    try:
        for entry in manifest["tensors"]:
            blobs = {}
            for part, (start, length) in entry["blobs"].items():
                if start < 0 or length < 0 or start + length > len(area):
                    raise ValueError(f"blob {part} lies outside the file")
                blobs[part] = bytes(area[start : start + length])
            out[entry["name"]] = decode_tensor(entry, blobs)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{source} holds an undecodable tensor: {exc!r}") from exc
    return out


def compress(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    values: str = "int8-channel",
    positions: str = "auto",
    level: int = 19,
    spec: dict[str, Any] | None = None,
) -> CompressReport:
    """Write ``model`` to ``path`` (one file) and report its size against dense float32.

    ``values``: ``exact`` (lossless), ``float16``, ``int8`` (one scale per tensor) or
    ``int8-channel`` (one scale per output channel); lossy modes touch weights only (≥ 2-D
    floating tensors). ``positions``: ``bitmap``, ``delta`` (varint index gaps) or ``auto``
    (smaller of the two per tensor).
    """
    spec = spec or get_spec(model)
    if spec is None:
        raise ConfigError(
            "the model has no spec: build it with netslim.build_model(...) or pass spec=..."
        )
    tensors = effective_state_dict(model)
    masks = {k: m for k, m in _masks_by_key(model).items() if k in tensors}
    entries, blobs = encode_state(tensors, masks, values=values, positions=positions)
    from netslim._version import __version__

    manifest = {
        "format": FORMAT,
        "netslim_version": __version__,
        "spec": spec,
        "history": get_history(model),
        "tensors": entries,
    }
    out = atomic_write_bytes(path, container.pack(manifest, blobs, level=level))
    size = out.stat().st_size
    dense = saved_size_bytes(model)
    total = sum(t.numel() for t in tensors.values() if t.is_floating_point())
    nonzero = sum(int(t.count_nonzero()) for t in tensors.values() if t.is_floating_point())
    return CompressReport(
        path=str(out),
        bytes=size,
        dense_fp32_bytes=dense,
        ratio=dense / size,
        values=values,
        sparsity=1 - nonzero / total if total else 0.0,
        layouts={
            e["name"]: e["layout"] + (f"/{e['positions']}" if "positions" in e else "")
            for e in entries
        },
    )


def read_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """The decoded effective tensors of an artifact, without building a model."""
    manifest, area = container.read(path)
    return {k: t for k, (t, _) in decode_state(manifest, area, str(path)).items()}


def _fill(model: nn.Module, decoded: dict[str, tuple[Tensor, Tensor | None]], source: str):
    """The state dict of the rebuilt (replayed) model, filled from decoded effective tensors."""
    state: dict[str, Tensor] = {}
    for key, current in model.state_dict().items():
        if ".parametrizations." in f".{key}":
            head, _, rest = f".{key}".partition(".parametrizations.")
            name, _, leaf = rest.partition(".")
            effective = f"{head[1:]}.{name}" if head else name
            if effective not in decoded:
                raise ArtifactError(f"{source} lacks tensor {effective!r}")
            tensor, keep = decoded[effective]
            if leaf == "original":
                state[key] = tensor
            elif leaf == "0.mask" and keep is not None:
                state[key] = keep.to(current.dtype)
            else:
                raise ArtifactError(f"{source}: cannot restore {key!r} (unknown parametrization)")
        elif key in decoded:
            state[key] = decoded[key][0]
    return state


def decompress(path: str | os.PathLike, *, trust_code: bool = False) -> nn.Module:
    """Rebuild the model from ``path``: spec → replay history → load tensors (eval mode).

    Everything is verified and decoded before the model is built, and the model is returned
    only once every tensor fits, so a corrupt file never yields a partly loaded model. A
    ``py:`` spec runs its file only with ``trust_code=True`` (as ``netslim.load``).
    """
    from netslim.io.replay import replay
    from netslim.models.spec import build_from_spec, code_to_run

    manifest, area = container.read(path)
    source = str(path)
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("tensors"), list):
        raise ArtifactError(f"{source} is not a netslim compressed model")
    spec = manifest.get("spec") or {}
    if not isinstance(spec, dict) or "source" not in spec:
        raise ArtifactError(f"{source} has no model spec")
    if code_to_run(spec) and not trust_code:
        build_from_spec(spec, origin=source)  # raises, naming the file, before decoding
    decoded = decode_state(manifest, area, source)
    model = build_from_spec(spec, trust_code=trust_code, origin=source)
    replay(model, manifest.get("history", []))
    state = _fill(model, decoded, source)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ArtifactError(f"tensors in {source} do not fit the rebuilt model: {exc}") from exc
    aliased = _aliases(model)
    missing = [k for k in missing if k not in aliased]
    if missing or unexpected:
        raise ArtifactError(f"{source} does not match the model: missing {missing[:5]}")
    set_spec(model, spec)
    set_history(model, manifest.get("history", []))
    return model.eval()


def _aliases(model: nn.Module) -> set[str]:
    """State-dict keys that share storage with an earlier key (tied weights are stored once)."""
    seen: set[tuple[int, int]] = set()
    out: set[str] = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        if tensor.numel() == 0:
            continue
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if ident in seen:
            out.add(key)
        seen.add(ident)
    return out
