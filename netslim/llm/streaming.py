"""Prune a model that never is in memory whole: blocks stream from safetensors shards on disk,
are pruned with the same sequential loop as in memory, and are written to new shards.

Peak memory is one block (in float32 for the arithmetic), the calibration activations and the
method's statistics, plus the embedding briefly while block 0's inputs are captured; large
temporaries are mapped and unmapped whole so freed ones do not stay resident
(:mod:`netslim.llm.heap`). Shapes are read from the safetensors headers, so every check runs
before any block is loaded, and the output goes to a temporary directory renamed only when
complete. Width pruning changes
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

from netslim.core.files import atomic_directory
from netslim.errors import ArtifactError, ConfigError, UnsupportedModelError
from netslim.llm.arch import Family, block_linears, family_of, layers
from netslim.llm.calibration import calibration_summary, capture_inputs
from netslim.llm.config import WEIGHT_METHODS, LLMPrune
from netslim.llm.depth import InfluenceStep, choose, new_layer_types, removal_count
from netslim.llm.heap import large_buffers_mapped, return_freed_memory
from netslim.llm.io import (
    MANIFEST,
    check_model_dir,
    check_writable,
    weight_files,
    write_manifest,
)
from netslim.llm.offsets import check_offsets
from netslim.llm.owl import plan_sparsities
from netslim.llm.prune import (
    check_calibration,
    check_nm_shapes,
    needs_calibration,
    weight_step_report,
)
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

    def _file(self, key: str) -> Path:
        if key not in self.where:
            raise ArtifactError(f"{self.directory} has no tensor {key!r}")
        return self.where[key]

    def names(self) -> list[str]:
        return list(self.where)

    def get(self, key: str) -> Tensor:
        # A fresh mapping per read: pages of a mapping kept open stay in the RSS, and over a
        # whole pass that would be the whole model.
        with safe_open(str(self._file(key)), framework="pt") as handle:
            return handle.get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        with safe_open(str(self._file(key)), framework="pt") as handle:
            return tuple(handle.get_slice(key).get_shape())

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
        block = self.blocks[index].to_empty(device="cpu").float()
        targets = block.state_dict()
        expected = set(targets)
        found = set()
        for key in self.reader.names():  # one tensor at a time: no second copy of the block
            if key.startswith(prefix):
                name = key[len(prefix) :]
                if name not in expected:
                    raise ArtifactError(f"unexpected tensor {key} for block {index}")
                tensor = self.reader.get(key)
                self.dtypes[key] = tensor.dtype
                targets[name].copy_(tensor)  # state_dict() views share the parameters' storage
                found.add(name)
        if found != expected:
            raise ArtifactError(f"block {index} lacks {sorted(expected - found)} in the shards")
        return block.eval()

    def release(self, index: int, block: nn.Module) -> None:
        if self.writer is not None:
            prefix = f"{self.fam.prefix}.{index}."
            tensors = {
                prefix + k: v.to(self.dtypes[prefix + k]) for k, v in block.state_dict().items()
            }
            self.writer.write(tensors, f"block-{index:05d}")
        block.to_empty(device="meta")
        return_freed_memory()


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
    """Block-0 inputs from a meta-device copy of the model in which only what runs before
    block 0 is real: embeddings from the shards, rotary tables rebuilt from the config. The
    blocks and the output head stay on ``meta`` (the pre-hook stops the pass at block 0)."""
    from transformers import AutoModelForCausalLM

    small = copy.deepcopy(config)
    small.num_hidden_layers = 1
    if getattr(small, "layer_types", None):
        small.layer_types = small.layer_types[:1]
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(small, dtype=torch.float32)
    head = shell.get_output_embeddings()
    for name, module in list(shell.named_modules()):
        if not name or name.startswith(f"{fam.prefix}.") or name == fam.prefix or module is head:
            continue
        if getattr(module, "_non_persistent_buffers_set", None):  # e.g. rotary inv_freq
            parent, _, attr = name.rpartition(".")
            setattr(shell.get_submodule(parent), attr, type(module)(config=shell.config))
            continue
        own = [p for p, _ in module.named_parameters(recurse=False)]
        own += [b for b, _ in module.named_buffers(recurse=False)]
        if own:
            module.to_empty(device="cpu", recurse=False)
            for key in own:
                getattr(module, key).data.copy_(reader.get(f"{name}.{key}"))  # casts in place
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
    if config.recover:
        raise ConfigError(
            "recovery trains the whole model against the dense one: run it in memory (no --stream)"
        )
    check_calibration(calibration, config)
    config = config.resolved(streaming=True)
    reader = ShardReader(src)
    skeleton = _skeleton(model_config)
    n_blocks = len(layers(skeleton, fam))
    if config.nm is not None:
        check_nm_shapes(_linear_shapes(reader, skeleton, fam), config.nm)
    check_offsets(config, layers(skeleton, fam))
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
    check_writable(out)
    with atomic_directory(out) as tmp, large_buffers_mapped():
        inputs = None
        if calibration is not None and needs_calibration(config):
            inputs = _capture(reader, skeleton.config, fam, calibration)
            report["calibration"] = calibration_summary(calibration)
        writer = ShardWriter(tmp)
        block_prefix = f"{fam.prefix}."
        if config.method in WEIGHT_METHODS:
            plan = plan_sparsities(StreamedBlocks(reader, skeleton, fam, None), inputs, config)
            step = WeightStep(config, plan.sparsities, scratch=Path(tmp))
            run_sequential(StreamedBlocks(reader, skeleton, fam, writer), inputs, step)
            report["sparsity"] = step.zeros / max(step.total, 1)
            report.update(weight_step_report(step, plan.info))
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
        rest = [k for k in reader.names() if not k.startswith(block_prefix)]
        for j, key in enumerate(rest):  # one shard each: the big embeddings never coexist
            writer.write({key: reader.get(key)}, f"rest-{j:03d}")
        writer.finish()
        model_config.save_pretrained(tmp)
        _copy_side_files(src, tmp)
        report["blocks"] = {"before": n_blocks, "after": len(kept)}
        report["bytes"] = {"before": reader.nbytes(), "after": writer.total}
        report["loader"] = "transformers"
        report["seconds"] = time.perf_counter() - start
        write_manifest(tmp, report)
    return report
