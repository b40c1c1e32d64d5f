"""Save pruned LMs in the Hugging Face layout; reload with stock ``from_pretrained`` when the
config describes every shape, else with :func:`load` (per-block widths).

Same-shape results (magnitude/Wanda/SparseGPT, N:M) and uniform width/depth results are plain
HF checkpoints. A width result whose blocks differ in size keeps the original sizes in
``config.json`` (a config has one ``intermediate_size``); ``netslim_llm.json`` then records the
widths and :func:`load` builds the model from the config and adopts each tensor's saved shape.
Directories are written under a temporary name and renamed at the end, so a failure never
leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from netslim.core.files import atomic_directory
from netslim.errors import ArtifactError, ConfigError, UnsupportedModelError
from netslim.llm.arch import family_of
from netslim.llm.gguf import gguf_source

MANIFEST = "netslim_llm.json"
FORMAT = "netslim-llm"


def check_writable(out: str | os.PathLike) -> None:
    """Refuse to replace anything but a netslim LLM output (``out`` may also be absent or empty)."""
    target = Path(out)
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).is_file())
    ):
        raise ConfigError(
            f"{target} exists and is not a netslim LLM output: refusing to overwrite it"
        )


def write_manifest(directory: Path, report: dict[str, Any]) -> None:
    manifest = {
        "format": FORMAT,
        "version": 1,
        "loader": report.get("loader", "transformers"),
        "report": report,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))


def save(
    model: nn.Module, out: str | os.PathLike, report: dict[str, Any], tokenizer: Any = None
) -> Path:
    """``save_pretrained`` (+ tokenizer, + ``netslim_llm.json``) into ``out``, atomically."""
    check_writable(out)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_manifest(tmp, report)
    return Path(out)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is corrupt: {exc}") from exc
    if data.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a netslim LLM manifest")
    return data


def _gguf_hint(path: Path) -> str:
    """How to read a GGUF download (a file, or a folder holding one): llama.cpp's format is a
    common way to get a model, and :func:`netslim.llm.gguf.from_gguf` converts it once."""
    gguf = gguf_source(path)
    if gguf is None:
        return ""
    return (
        f" ({gguf.name} is a GGUF file: `netslim llm` takes it as it is; in Python convert it "
        f"once with netslim.llm.from_gguf('{gguf}', DIR) and give DIR)"
    )


def check_model_dir(directory: str | os.PathLike) -> Any:
    """The config of a supported causal LM directory, or a clear error (nothing loaded yet)."""
    from transformers import AutoConfig

    path = Path(directory)
    if not (path / "config.json").is_file():
        raise UnsupportedModelError(
            f"{path} has no config.json: not a Hugging Face model directory{_gguf_hint(path)}"
        )
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError, KeyError) as exc:
        raise UnsupportedModelError(f"{path}: unreadable config.json: {exc}") from exc
    family_of(getattr(config, "model_type", None))
    return config


def weight_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ArtifactError(f"{directory} has no .safetensors weights")
    return files


def load(directory: str | os.PathLike, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a pruned LM: stock ``from_pretrained`` if its config suffices, else adopt shapes."""
    from transformers import AutoModelForCausalLM

    path = Path(directory)
    config = check_model_dir(path)
    manifest = read_manifest(path)
    if manifest is None or manifest.get("loader") == "transformers":
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        state.update(load_file(str(file)))
    adopt_shapes(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or (set(missing) - tied):
        raise ArtifactError(
            f"weights in {path} do not fit: missing {missing}, unexpected {unexpected}"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()


def adopt_shapes(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Give every parameter whose saved shape differs an empty tensor of that shape (and fix the
    size attributes of linear layers); returns the keys changed."""
    changed = []
    for key, tensor in state.items():
        module_name, _, name = key.rpartition(".")
        module = model.get_submodule(module_name)
        current = getattr(module, name, None)
        if not isinstance(current, torch.Tensor) or current.shape == tensor.shape:
            continue
        if not isinstance(current, nn.Parameter):
            raise ArtifactError(
                f"{key}: saved shape {tuple(tensor.shape)} differs from the model's"
            )
        setattr(module, name, nn.Parameter(torch.empty(tensor.shape, dtype=current.dtype)))
        if name == "weight" and isinstance(module, nn.Linear):
            module.out_features, module.in_features = tensor.shape
        elif name == "weight" and type(module).__name__ == "Conv1D":
            module.nx, module.nf = tensor.shape
        changed.append(key)
    return changed
