"""Prune a model that never is in memory whole: blocks stream from safetensors shards on disk,
are pruned with the same sequential loop as in memory, and are written to new shards.

Peak memory is one block (in float32 for the arithmetic), the calibration activations and the
method's statistics, plus the embedding briefly while block 0's inputs are captured. Shapes
are read from the safetensors headers, so every check runs before any block is loaded, and
the output goes to a temporary directory renamed only when complete. Width pruning changes
tensor shapes across the model and runs in memory only.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from netslim.errors import ArtifactError, ConfigError, UnsupportedModelError
from netslim.llm.arch import Family, block_linears, family_of, layers
from netslim.llm.calibration import capture_inputs
from netslim.llm.config import WEIGHT_METHODS, LLMPrune
from netslim.llm.depth import InfluenceStep, choose, new_layer_types, removal_count
from netslim.llm.io import (
    MANIFEST,
    check_model_dir,
    commit_dir,
    staging_dir,
    weight_files,
    write_manifest,
)
from netslim.llm.prune import check_calibration, check_nm_shapes, needs_calibration
from netslim.llm.sequential import WeightStep, run_sequential

INDEX = "model.safetensors.index.json"


class ShardReader:
    """Tensors by key across the shards of a directory, read one at a time (memory-mapped)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        index = self.directory / INDEX
        self.where: dict[str, Path] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise ArtifactError(f"{index} is corrupt: {exc}") from exc
            self.where = {k: self.directory / f for k, f in weight_map.items()}
        else:
            for file in weight_files(self.directory):
                with safe_open(str(file), framework="pt") as handle:
                    self.where.update(dict.fromkeys(handle.keys(), file))
        self._open: dict[Path, Any] = {}

    def _handle(self, key: str) -> Any:
        if key not in self.where:
            raise ArtifactError(f"{self.directory} has no tensor {key!r}")
        file = self.where[key]
        if file not in self._open:
            self._open[file] = safe_open(str(file), framework="pt")
        return self._open[file]

    def names(self) -> list[str]:
        return list(self.where)

    def get(self, key: str) -> Tensor:
        return self._handle(key).get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(key).get_slice(key).get_shape())

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in set(self.where.values()))


class ShardWriter:
    """Writes shards into a directory and the index that maps every key to its shard."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.weight_map: dict[str, str] = {}
        self.total = 0

    def write(self, tensors: dict[str, Tensor], name: str) -> None:
        file = f"model-{name}.safetensors"
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(tensors, str(self.directory / file), metadata={"format": "pt"})
        for key, value in tensors.items():
            self.weight_map[key] = file
            self.total += value.numel() * value.element_size()

    def finish(self) -> None:
        index = {
            "metadata": {"total_size": self.total},
            "weight_map": dict(sorted(self.weight_map.items())),
        }
        (self.directory / INDEX).write_text(json.dumps(index, indent=2))


class StreamedBlocks:
    """:class:`~netslim.llm.sequential.BlockSource` over shards: block ``i`` is materialised on
    load (in ``compute_dtype``), written back in its stored dtype on release, then freed."""

    def __init__(
        self, reader: ShardReader, skeleton: nn.Module, fam: Family, writer: ShardWriter | None
    ):
        self.reader = reader
        self.blocks = layers(skeleton, fam)
        self.fam = fam
        self.writer = writer
        self.dtypes: dict[str, torch.dtype] = {}

    def __len__(self) -> int:
        return len(self.blocks)

    def load(self, index: int) -> nn.Module:
        prefix = f"{self.fam.prefix}.{index}."
        block = self.blocks[index].to_empty(device="cpu")
        state = {}
        for key in self.reader.names():
            if key.startswith(prefix):
                tensor = self.reader.get(key)
                self.dtypes[key] = tensor.dtype
                state[key[len(prefix) :]] = tensor.float()
        block.float()
        block.load_state_dict(state, strict=True)
        return block.eval()

    def release(self, index: int, block: nn.Module) -> None:
        if self.writer is not None:
            prefix = f"{self.fam.prefix}.{index}."
            tensors = {
                prefix + k: v.to(self.dtypes[prefix + k]) for k, v in block.state_dict().items()
            }
            self.writer.write(tensors, f"block-{index:05d}")
        block.to_empty(device="meta")


def _skeleton(config: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    for name, _ in model.named_buffers():
        if name.startswith("model.layers.") or name.startswith("transformer.h."):
            raise UnsupportedModelError(
                f"blocks hold buffers ({name}): cannot stream them from disk"
            )
    return model


def _capture(reader: ShardReader, config: Any, fam: Family, ids: Tensor):
    """Block-0 inputs from a one-block copy of the model with its real non-block weights."""
    from transformers import AutoModelForCausalLM

    small = copy.deepcopy(config)
    small.num_hidden_layers = 1
    if getattr(small, "layer_types", None):
        small.layer_types = small.layer_types[:1]
    shell = AutoModelForCausalLM.from_config(small, dtype=torch.float32)
    state = {}
    first = f"{fam.prefix}.0."
    for key in reader.names():
        is_block = key.startswith(f"{fam.prefix}.")
        if not is_block or key.startswith(first):
            state[key] = reader.get(key).float()
    missing, unexpected = shell.load_state_dict(state, strict=False)
    tied = set(getattr(shell, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise ArtifactError(
            f"shards do not fit the config: missing {missing}, unexpected {unexpected}"
        )
    if getattr(config, "tie_word_embeddings", False):
        shell.tie_weights()
    inputs = capture_inputs(shell.eval(), ids)
    del shell
    return inputs


def _linear_shapes(
    reader: ShardReader, skeleton: nn.Module, fam: Family
) -> dict[str, tuple[int, int]]:
    shapes = {}
    for i, block in enumerate(layers(skeleton, fam)):
        for name, module in block_linears(block).items():
            key = f"{fam.prefix}.{i}.{name}.weight"
            shape = reader.shape(key)
            shapes[key] = shape[::-1] if type(module).__name__ == "Conv1D" else shape
    return shapes


def _copy_side_files(src: Path, dst: Path) -> None:
    for file in src.iterdir():
        if file.is_file() and not (
            file.name.endswith(".safetensors") or file.name in (INDEX, "config.json", MANIFEST)
        ):
            shutil.copy2(file, dst / file.name)


def prune_streaming(
    src: str | os.PathLike,
    out: str | os.PathLike,
    config: LLMPrune,
    calibration: Tensor | None = None,
) -> dict[str, Any]:
    """Prune the model in directory ``src`` block by block from disk into directory ``out``."""
    start = time.perf_counter()
    src = Path(src)
    model_config = check_model_dir(src)
    fam = family_of(model_config.model_type)
    if config.method == "width":
        raise ConfigError(
            "width pruning changes shapes across the model: run it in memory (no --stream)"
        )
    check_calibration(calibration, config)
    reader = ShardReader(src)
    skeleton = _skeleton(model_config)
    n_blocks = len(layers(skeleton, fam))
    if config.nm is not None:
        check_nm_shapes(_linear_shapes(reader, skeleton, fam), config.nm)
    if config.method == "depth":
        removal_count(config, n_blocks)
        if getattr(model_config, "scale_attn_by_inverse_layer_idx", False):
            raise UnsupportedModelError(
                "depth pruning does not support scale_attn_by_inverse_layer_idx"
            )
    report: dict[str, Any] = {
        "method": config.method,
        "config": config.to_dict(),
        "family": fam.name,
        "streamed": True,
    }
    tmp = staging_dir(out)
    try:
        inputs = None
        if calibration is not None and needs_calibration(config):
            inputs = _capture(reader, skeleton.config, fam, calibration)
            report["calibration"] = {
                "sequences": int(calibration.shape[0]),
                "seq_len": int(calibration.shape[1]),
                "tokens": int(calibration.numel()),
            }
        writer = ShardWriter(tmp)
        block_prefix = f"{fam.prefix}."
        if config.method in WEIGHT_METHODS:
            step = WeightStep(config)
            run_sequential(StreamedBlocks(reader, skeleton, fam, writer), inputs, step)
            report["sparsity"] = step.zeros / max(step.total, 1)
            kept = list(range(n_blocks))
        else:
            influence = InfluenceStep()
            run_sequential(StreamedBlocks(reader, skeleton, fam, None), inputs, influence)
            removed = choose(influence.influence, removal_count(config, n_blocks))
            kept = [i for i in range(n_blocks) if i not in set(removed)]
            for new, old in enumerate(kept):
                old_prefix = f"{block_prefix}{old}."
                tensors = {
                    f"{block_prefix}{new}.{k[len(old_prefix) :]}": reader.get(k)
                    for k in reader.names()
                    if k.startswith(old_prefix)
                }
                writer.write(tensors, f"block-{new:05d}")
            report["block_influence"] = influence.influence
            report["removed_blocks"] = removed
            types = new_layer_types(model_config, removed)
            model_config.num_hidden_layers = len(kept)
            if types is not None:
                model_config.layer_types = types
        writer.write(
            {k: reader.get(k) for k in reader.names() if not k.startswith(block_prefix)}, "rest"
        )
        writer.finish()
        model_config.save_pretrained(tmp)
        _copy_side_files(src, tmp)
        report["blocks"] = {"before": n_blocks, "after": len(kept)}
        report["bytes"] = {"before": reader.nbytes(), "after": writer.total}
        report["loader"] = "transformers"
        report["seconds"] = time.perf_counter() - start
        write_manifest(tmp, report)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out)
    return report
