"""GGUF files (llama.cpp's format, a common way to download a model) as the Hugging Face folder
everything else here reads: transformers dequantizes a GGUF on load but will not save the model it
loaded that way ("quantized with gguf and is not serializable"), so the weights move into a plain
model of the same config, float32, which saves and streams like any checkpoint."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from netslim.core.files import atomic_directory
from netslim.errors import UnsupportedModelError


def gguf_source(path: str | os.PathLike) -> Path | None:
    """The GGUF file that ``path`` names: the file itself, or the only ``*.gguf`` of a folder
    without ``config.json``; None for anything else (a folder with several is an error)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UnsupportedModelError(f"{path} holds several GGUF files ({names}): give one of them")
    return found[0] if found else None


def gguf_context(file: str | os.PathLike) -> int | None:
    """The context length a GGUF file declares (``<architecture>.context_length``), read from
    its header without loading the weights; None where it declares none."""
    import gguf

    try:
        fields = gguf.GGUFReader(str(file)).fields
        arch = fields["general.architecture"].contents()
        field = fields.get(f"{arch}.context_length")
    except (OSError, ValueError, KeyError) as exc:
        raise UnsupportedModelError(f"{file}: not a readable GGUF file: {exc}") from exc
    return int(field.contents()) if field is not None else None


def from_gguf(file: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``file`` (GGUF) to ``out`` as a float32 Hugging Face folder: config, safetensors
    weights (dequantized) and tokenizer. ``out`` appears only once complete."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = Path(file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            file.parent, gguf_file=file.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise UnsupportedModelError(
            f"{file}: transformers cannot read this GGUF file: {exc}"
        ) from exc
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: a plain checkpoint
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    with atomic_directory(out) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out)
