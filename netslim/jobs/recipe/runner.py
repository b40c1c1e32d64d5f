"""Run a validated recipe: each step calls the module that owns it, in the order written.

Every step is checked (names, values) before the first one runs, so a typo in the last step
fails in a second rather than after an hour of training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from netslim.core.copying import copy_model
from netslim.errors import ConfigError, NetslimError
from netslim.jobs.prune_report import noted_warnings
from netslim.jobs.recipe.loader import Recipe
from netslim.jobs.recipe.schema import CompressStep, PruneStep, QuantizeStep, RecipeSettings


def _prune_config(settings: RecipeSettings, step: PruneStep, finetunes_after: bool) -> Any:
    """The step's method config, as `netslim prune` would build it with the recipe's data
    (the prune step reads it: data-driven criteria, reconstruction) and, for the reconstruct
    default, whether a finetune step follows."""
    from netslim.jobs.settings import JobSettings, build_config

    for name in ("epochs", "lr"):
        if step.method != "gate" and getattr(step, name) != getattr(PruneStep, name):
            raise ConfigError(
                f"{name} in a prune step is gate training's (method: gate); train other methods "
                "with a train or finetune step"
            )
    job = JobSettings(
        model=settings.model,
        method=step.method,
        ratio=step.ratio,
        scope=step.scope,
        criterion=step.criterion,
        nm=step.nm,
        target_macs=step.target_macs,
        target_latency_ms=step.target_latency_ms,
        target_speedup=step.target_speedup,
        runtime=step.runtime,
        threads=step.threads,
        batch=step.batch,
        round_to=step.round_to,
        blocks=step.blocks,
        ignore=list(step.ignore),
        freeze=list(step.freeze),
        per_module=step.per_module,
        remove=step.remove,
        epochs=step.epochs,
        lr=step.lr,
        target_open=step.target_open,
        per_input=step.per_input,
        seed=settings.seed,
        data=settings.data,
        reconstruct=step.reconstruct,
        finetune_epochs=1 if finetunes_after else 0,
    )
    return build_config(job)


def _finetunes_after(recipe: Recipe, index: int) -> bool:
    """Whether a finetune step (with epochs) follows step ``index``."""
    return any(
        kind == "finetune" and step.epochs > 0 for kind, step, _ in recipe.steps[index + 1 :]
    )


def _precheck(recipe: Recipe) -> None:
    from netslim.compress import POSITION_MODES, VALUE_MODES
    from netslim.quantize import MODES

    for index, (kind, step, line) in enumerate(recipe.steps):
        try:
            if isinstance(step, PruneStep):
                _prune_config(recipe.settings, step, _finetunes_after(recipe, index))
            elif isinstance(step, QuantizeStep) and step.mode not in MODES:
                raise ConfigError(f"unknown quantize mode {step.mode!r}: one of {', '.join(MODES)}")
            elif isinstance(step, CompressStep):
                if step.values not in VALUE_MODES:
                    raise ConfigError(
                        f"unknown values {step.values!r}: one of {', '.join(VALUE_MODES)}"
                    )
                if step.positions not in POSITION_MODES:
                    raise ConfigError(
                        f"unknown positions {step.positions!r}: one of {', '.join(POSITION_MODES)}"
                    )
            for name in ("epochs", "qat_epochs", "calibration_batches"):
                if getattr(step, name, 0) < 0:
                    raise ConfigError(f"{name} must be >= 0")
        except NetslimError as exc:
            raise ConfigError(f"{recipe.source} line {line}: {kind}: {exc}") from None


def _preflight(recipe: Recipe, model: nn.Module, example_inputs: Any) -> None:
    """The example inputs fit the model, and every prune step's method checks its settings
    against it (``netslim.methods.preflight``), before the first step runs (against the model
    as built: an earlier step may remove blocks, so a later step's block count is checked again
    when it prunes)."""
    from netslim.jobs.preflight import check_example_fits
    from netslim.methods import preflight

    try:
        check_example_fits(model, example_inputs, recipe.settings.model, flag="example_shape")
    except NetslimError as exc:
        raise ConfigError(f"{recipe.source}: {exc}") from None

    for index, (kind, step, line) in enumerate(recipe.steps):
        if isinstance(step, PruneStep):
            try:
                config = _prune_config(recipe.settings, step, _finetunes_after(recipe, index))
                preflight(step.method, model, config, example_inputs)
            except NetslimError as exc:
                raise ConfigError(f"{recipe.source} line {line}: {kind}: {exc}") from None


class _State:
    def __init__(self, recipe: Recipe):
        from netslim.jobs.model_data import data_shape, model_and_data
        from netslim.models.spec import make_example_inputs

        s = recipe.settings
        self.settings = s
        # as `netslim prune` reads them: a zoo model sized for the data, loaders for the model
        self.model, self.train_loader, self.test_loader = model_and_data(s)
        shape = s.example_shape or data_shape(self.train_loader)
        self.example_inputs = make_example_inputs(self.model, shape)
        self.teacher: nn.Module | None = None
        self.quantized: nn.Module | None = None
        self.quant_mode: str | None = None
        self.out = Path(s.out)

    def accuracy(self, model: nn.Module) -> float | None:
        from netslim.training import evaluate

        return None if self.test_loader is None else evaluate(model, self.test_loader)

    def need_data(self, kind: str, line: int) -> None:
        if self.train_loader is None:
            raise ConfigError(f"line {line}: the {kind} step needs 'data' in the recipe")


def _run_step(
    state: _State, kind: str, step: Any, line: int, finetunes_after: bool
) -> dict[str, Any]:
    from netslim.training import train

    model = state.model
    if kind in ("train", "finetune"):
        state.need_data(kind, line)
        teacher = state.teacher if getattr(step, "distill", False) else None
        if getattr(step, "distill", False) and teacher is None:
            raise ConfigError(f"line {line}: distill needs a prune step before it (the teacher)")
        result = train(
            model,
            state.train_loader,
            epochs=step.epochs,
            lr=step.lr,
            teacher=teacher,
            progress=False,
        )
        return {"steps": result.steps, "accuracy": state.accuracy(model)}
    if kind == "prune":
        from netslim.api import prune_

        if state.teacher is None:
            state.teacher = copy_model(model).eval()
        summary = prune_(
            model,
            _prune_config(state.settings, step, finetunes_after),
            example_inputs=state.example_inputs,
            train_loader=state.train_loader,  # calibration: data-driven criteria, reconstruction
        )
        return {"summary": summary, "accuracy": state.accuracy(model)}
    if kind == "quantize":
        from netslim.quantize import quantize_int8

        if step.mode == "qat":
            state.need_data(kind, line)
        quantized, report = quantize_int8(
            model,
            mode=step.mode,
            example_inputs=state.example_inputs,
            calibration=state.train_loader,
            calibration_batches=step.calibration_batches,
            train_loader=state.train_loader,
            qat_epochs=step.qat_epochs,
            qat_lr=step.qat_lr,
            teacher=state.teacher if step.distill else None,
        )
        state.quantized, state.quant_mode = quantized, report.mode
        return {"report": report.as_dict(), "accuracy": state.accuracy(quantized)}
    if kind == "compress":
        from netslim.compress import compress

        report = compress(
            model, state.out / step.file, values=step.values, positions=step.positions
        )
        return report.as_dict()
    if kind == "export":
        return _export(state, step)
    raise ConfigError(f"line {line}: unknown step {kind!r}")  # unreachable after parsing


def _export(state: _State, step: Any) -> dict[str, Any]:
    from netslim.export import export_onnx, export_program, max_abs_diff, quantize_onnx

    result: dict[str, Any] = {}
    if step.onnx or step.int8:
        onnx = export_onnx(state.model, state.example_inputs, state.out / "model.onnx")
        result["onnx"] = onnx.as_dict()
        if step.int8:
            mode = "static" if state.quant_mode in ("static", "qat") else "dynamic"
            from netslim._runtime import ROOT_LOG, quiet_log

            with quiet_log(ROOT_LOG):
                path = quantize_onnx(
                    onnx.path,
                    state.out / "model_int8.onnx",
                    mode=mode,
                    calibration=state.train_loader,
                )
            result["onnx_int8"] = {
                "path": str(path),
                "mode": mode,
                "bytes": path.stat().st_size,
                "max_abs_diff_vs_fp32": max_abs_diff(state.model, path, state.example_inputs),
            }
    if step.program:
        diff = export_program(state.model, state.example_inputs, state.out / "model.pt2")
        result["program"] = {"path": str(state.out / "model.pt2"), "max_abs_diff": diff}
    return result


def run_recipe(recipe: Recipe) -> dict[str, Any]:
    """Run every step, save the float model to ``out/model`` and write ``out/recipe_report.json``."""
    from netslim.io import save
    from netslim.training import seed_everything

    _precheck(recipe)
    seed_everything(recipe.settings.seed)
    state = _State(recipe)
    _preflight(recipe, state.model, state.example_inputs)
    report: dict[str, Any] = {"recipe": recipe.source, "model": recipe.settings.model, "steps": []}
    report["accuracy_start"] = state.accuracy(state.model)
    for index, (kind, step, line) in enumerate(recipe.steps):
        notes: list[str] = []  # what the step warned of (a time plan's lowered floor, ...)
        try:
            with noted_warnings(notes):
                result = _run_step(state, kind, step, line, _finetunes_after(recipe, index))
        except NetslimError as exc:
            raise type(exc)(f"{recipe.source} line {line}: {kind}: {exc}") from exc
        report["steps"].append({"step": kind, "line": line, **result})
        if notes:
            report["steps"][-1]["warnings"] = notes
    state.out.mkdir(parents=True, exist_ok=True)
    save(state.model, state.out / "model")
    (state.out / "recipe_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
