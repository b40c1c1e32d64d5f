"""The ``Unstructured`` handler behind ``netslim.prune_``, and the replay of its history record.

Decide (``compute_masks``), apply (``apply_masks``, all-or-nothing), record (``history.record``
with the target keys, so ``netslim.load`` can re-attach empty masks before loading weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from netslim.core.copying import copy_model
from netslim.core.history import record
from netslim.core.masks import attach_mask, detach_mask, get_mask, sparsity_report
from netslim.core.registry import MethodSpec, PruneContext
from netslim.errors import ArtifactError, ConfigError, NetslimError, PruningError
from netslim.reconstruct.policy import auto_reconstruct
from netslim.unstructured.allocation import check_nm_fit, compute_masks
from netslim.unstructured.config import Unstructured
from netslim.unstructured.settings import FLAGS, unstructured_config

HISTORY_KIND = "masks"


def _resolve(
    model: nn.Module, key: str, error: type[Exception] = ConfigError
) -> tuple[nn.Module, str]:
    path, _, name = key.rpartition(".")
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        raise error(f"{key}: no module {path!r} in {type(model).__name__}") from None
    if not isinstance(getattr(module, name, None), Tensor):
        raise error(f"{key}: {type(module).__name__} has no tensor {name!r}")
    return module, name


def _restore(module: nn.Module, name: str, previous: Tensor | None, order: list[str]) -> None:
    if previous is not None:
        attach_mask(module, name, previous)
        return
    detach_mask(module, name)
    # removing a parametrization re-registers the tensor last; put it back where it was
    params = module._parameters
    for key in order:
        if key in params:
            params[key] = params.pop(key)


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Attach every mask or, if one fails, none: earlier attachments are undone before raising."""
    resolved = []
    for key, mask in masks.items():
        module, name = _resolve(model, key)
        expected = tuple(getattr(module, name).shape)
        if tuple(mask.shape) != expected:
            raise ConfigError(f"{key}: mask shape {tuple(mask.shape)} does not match {expected}")
        resolved.append((key, module, name, mask))
    undo: list[tuple[nn.Module, str, Tensor | None, list[str]]] = []
    failed = ""
    try:
        for key, module, name, mask in resolved:
            failed = key
            entry = (module, name, get_mask(module, name), list(module._parameters))
            attach_mask(module, name, mask)
            undo.append(entry)
    except Exception as exc:
        for entry in reversed(undo):
            _restore(*entry)
        if isinstance(exc, NetslimError):
            raise
        raise PruningError(str(exc), module=failed) from exc


def config_record(config: Unstructured) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as history records must be."""
    return config.to_dict()


def summarize(model: nn.Module, config: Unstructured) -> dict[str, Any]:
    """JSON-ready summary: the settings, overall and per-tensor pruned fraction."""
    report = sparsity_report(model)
    return {
        "method": "unstructured",
        "config": config_record(config),
        "sparsity": report["overall"]["sparsity"],
        "pruned": report["overall"]["pruned"],
        "numel": report["overall"]["numel"],
        "layers": {key: layer["sparsity"] for key, layer in report["layers"].items()},
    }


def record_masks(model: nn.Module, targets: list[str], config: Unstructured) -> None:
    record(model, HISTORY_KIND, {"targets": list(targets), "config": config_record(config)})


def prune(
    model: nn.Module, config: Unstructured, ctx: PruneContext | None = None
) -> dict[str, Any]:
    """Mask the lowest-scoring weights per ``config``; the model is unchanged if this raises.

    ``reconstruct=None`` resolves here (``auto_reconstruct``: on with calibration batches, as
    nothing fine-tunes inside this call); the record and summary carry the resolved value."""
    calibration = None
    if ctx is not None:
        from netslim.importance import calibration_from

        calibration = calibration_from(ctx, config.calibration_batches)
    refit = auto_reconstruct(
        config.reconstruct,
        method_kind="unstructured",
        has_calibration=calibration is not None,
        finetunes_after=False,
    )
    config = replace(config, reconstruct=refit)
    masks = compute_masks(model, config, calibration)
    fitted = None
    if refit:
        reference = ctx.extras.get("reference") if ctx is not None else None
        fitted = _reconstructed(model, masks, calibration, reference)
    apply_masks(model, masks)
    if fitted is not None:
        model.load_state_dict(fitted[0])  # same keys and shapes: the masked copy's new values
    record_masks(model, list(masks), config)
    summary = summarize(model, config)
    if fitted is not None:
        summary["reconstruction"] = fitted[1]
    return summary


def _reconstructed(
    model: nn.Module, masks: Mapping[str, Tensor], calibration: Any, reference: Any = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Mask a copy, refit its masked convs/linears against ``reference`` (default: ``model``
    as it was before this step; a schedule passes ``prune_(..., reference=dense)`` so that
    every step aims at the original outputs); the copy's state and the report. The model itself
    is untouched, so a failure here leaves it as it was."""

    from netslim.reconstruct import calibration_batches, reconstruct, supported

    batches = calibration_batches(model, calibration)
    work = copy_model(model)
    apply_masks(work, masks)
    targets = {}
    for key in masks:
        name, _, leaf = key.rpartition(".")
        module = work.get_submodule(name)
        if leaf == "weight" and supported(module):
            targets[name] = (None, get_mask(module, "weight"))
    report = reconstruct(work, model if reference is None else reference, targets, batches)
    return work.state_dict(), report


def replay_masks(model: nn.Module, step: dict[str, Any]) -> None:
    """Re-attach all-keep masks on the recorded targets of a freshly built model, so that its
    ``load_state_dict`` finds the mask buffers (whose saved values then restore the pruning)."""
    targets = step.get("targets")
    if not isinstance(targets, list) or not all(isinstance(k, str) for k in targets):
        raise ArtifactError(f"malformed masks record: targets={targets!r:.80}")
    ones = {}
    for key in targets:
        module, name = _resolve(model, key, ArtifactError)
        ones[key] = torch.ones_like(getattr(module, name), dtype=torch.bool)
    apply_masks(model, ones)


FOLD_KIND = "fold"


def fold_masks(model: nn.Module) -> list[str]:
    """Fold every mask into its weight for good and record it, so the saved model is plain
    weights with exact zeros (small on disk, sparse in ``parameters()`` after ``load``)."""
    from netslim.core.masks import make_permanent

    keys = make_permanent(model)
    with torch.no_grad():
        for key in keys:  # original * 0 is -0.0 for negative originals: store plain zeros
            path, _, name = key.rpartition(".")
            tensor = getattr(model.get_submodule(path) if path else model, name)
            tensor.masked_fill_(tensor == 0, 0.0)
    if keys:
        record(model, FOLD_KIND, {"keys": keys})
    return keys


def replay_fold(model: nn.Module, step: dict[str, Any]) -> None:
    """``netslim.load``: the recorded masks were folded; fold the re-attached empty ones."""
    from netslim.core.masks import make_permanent

    make_permanent(model)


def _preflight(model: nn.Module, config: Unstructured, example_inputs: Any) -> None:
    check_nm_fit(model, config)  # the targets: names in ``ignore``, and N:M's divisibility


METHOD = MethodSpec(
    handlers={Unstructured: prune},
    replays={HISTORY_KIND: replay_masks, FOLD_KIND: replay_fold},
    from_settings=unstructured_config,
    flags=FLAGS,
    preflight={Unstructured: _preflight},
)
