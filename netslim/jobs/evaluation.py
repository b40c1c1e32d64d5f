"""``netslim eval``: re-measure a saved result in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netslim.errors import ArtifactError
from netslim.io import load
from netslim.io.artifact import MANIFEST

# the reports a job leaves beside its model/: a prune job's, a compact job's (which carries its
# source job's settings and input shape on to eval and export)
JOB_REPORTS = ("report.json", "compact.json")
# beside an export: the report and model spec of the job it came from, so that eval reads the
# data as that job did wherever the export is written or moved
EXPORT_JOB = "job.json"


def read_job_report(folder: Path) -> dict[str, Any] | None:
    """The report of the job that wrote ``folder``, or None."""
    for name in JOB_REPORTS:
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    return None


def locate(directory: Path) -> tuple[Path, dict[str, Any] | None]:
    """Accept either a job directory (a report + model/) or a bare saved model directory."""
    if (directory / MANIFEST).is_file():
        return directory, read_job_report(directory.parent)
    if (directory / "model" / MANIFEST).is_file():
        return directory / "model", read_job_report(directory)
    from netslim.llm.io import MANIFEST as LLM_MANIFEST

    if (directory / LLM_MANIFEST).is_file():
        raise ArtifactError(
            f"{directory} is a netslim llm result, a Hugging Face folder: load it with "
            f"from_pretrained (or netslim.llm.load); its perplexities are in {LLM_MANIFEST}"
        )
    raise ArtifactError(
        f"{directory} holds no netslim model (expected {MANIFEST} or model/{MANIFEST})"
    )


def job_example_shape(report: dict[str, Any] | None) -> list[int] | None:
    """The input shape a prune job ran at (traced, measured, and what its exports take): the
    one it resolved, from ``--example-shape`` or one sample of its data; reports written before
    that was recorded give only ``--example-shape``."""
    report = report or {}
    return report.get("example_shape") or report.get("settings", {}).get("example_shape")


def _test_loader(
    data: str, settings: dict[str, Any], limit_test: int | None, model: Any = None
) -> Any:
    """The test split of ``data`` read with the prune job's data options (``--val-split`` and
    the column names), as the job measured it."""
    from torch.utils.data import DataLoader

    from netslim.data import load_dataset
    from netslim.jobs.model_data import data_options

    test_set = load_dataset(
        data,
        "test",
        limit=limit_test or settings.get("limit_test"),
        model=model,
        options=data_options(settings),
    )
    return DataLoader(test_set, batch_size=128, shuffle=False)


def _data_to_measure(data: str | None, settings: dict[str, Any]) -> str | None:
    """The data set to measure accuracy on: the one given, else the pruning run's; ``none``
    (as ``netslim prune --data none`` takes it) measures without accuracy."""
    chosen = data or settings.get("data")
    return None if chosen == "none" else chosen


def evaluate_saved(
    directory: Path,
    *,
    data: str | None = None,
    limit_test: int | None = None,
    example_shape: list[int] | None = None,
    latency: bool = True,
    trust_code: bool = False,
) -> dict[str, Any]:
    from netslim.jobs.model_data import check_data_fits
    from netslim.measure import measure
    from netslim.models.spec import make_example_inputs
    from netslim.training import evaluate

    path = Path(directory)
    onnx = _onnx_file(path)
    if onnx is not None:  # an export (netslim export DIR, prune --quantize int8)
        return evaluate_onnx(
            onnx,
            data=data,
            limit_test=limit_test,
            example_shape=example_shape,
            latency=latency,
            trust_code=trust_code,
        )
    if path.is_file() and path.suffix == ".nsz":  # a compressed artifact (netslim compress)
        from netslim.compress import decompress

        model = decompress(path, trust_code=trust_code)
        report = read_job_report(path.parent)
    else:
        model_dir, report = locate(path)
        model = load(model_dir, trust_code=trust_code)
    settings = (report or {}).get("settings", {})
    data = _data_to_measure(data, settings)
    shape = example_shape or job_example_shape(report)
    loader = None
    if data:
        from netslim.data import loader_info
        from netslim.data.datasets import data_kind

        loader = _test_loader(data, settings, limit_test, model)
        check_data_fits(model, loader, data, settings.get("model") or str(path))
        if shape is None and data_kind(data) in ("folder", "hf"):
            shape = (1, *loader_info(loader).input_shape)
    measured = measure(
        model, make_example_inputs(model, shape), loader=loader, evaluate=evaluate, latency=latency
    )
    result: dict[str, Any] = {"measured": measured}
    if report is not None:
        result["report"] = report
    return result


def _check_onnx_fits(onnx: Path, sess: Any, loader: Any, data: str) -> None:
    """One line before any work when the export's fixed input sizes are not the data's (an
    export traced at another shape than the job ran at)."""
    import torch

    from netslim.errors import ConfigError

    sample = loader.dataset[0][0]
    if not isinstance(sample, torch.Tensor):  # keyword inputs: onnxruntime names the mismatch
        return
    dims = list(sess.get_inputs()[0].shape)[1:]
    sizes = list(sample.shape)
    fits = len(dims) == len(sizes) and all(
        not isinstance(d, int) or d == n for d, n in zip(dims, sizes, strict=True)
    )
    if not fits:
        wanted = "x".join(str(d) for d in dims)
        given = ",".join(str(n) for n in [1, *sizes])
        raise ConfigError(
            f"{onnx} takes inputs of Nx{wanted}, {data}'s samples are "
            f"{'x'.join(map(str, sizes))}: export again with --example-shape {given}"
        )


def _onnx_file(path: Path) -> Path | None:
    """The ONNX file to measure: one named, or the ``model.onnx`` of an export folder. A job
    folder that holds a saved model (``prune --quantize int8`` also writes ``model.onnx``
    beside ``model/``) is measured as the saved model."""
    if path.is_file() and path.suffix == ".onnx":
        return path
    saved = (path / MANIFEST).is_file() or (path / "model" / MANIFEST).is_file()
    if path.is_dir() and not saved and (path / "model.onnx").is_file():
        return path / "model.onnx"
    return None


def write_export_job(out: Path, model_dir: Path, report: dict[str, Any] | None) -> Path:
    """Write ``EXPORT_JOB`` beside an export: the report of the job that saved ``model_dir``
    (None for a bare saved model) and the model's spec, which builds its architecture."""
    from netslim.io.artifact import read_manifest

    path = out / EXPORT_JOB
    job = {"report": report, "spec": read_manifest(model_dir)["spec"]}
    path.write_text(json.dumps(job, indent=2, default=str))
    return path


def _job_of(onnx: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    """The model spec and report of the job the export came from, and where they were read:
    the export's ``EXPORT_JOB``, else (exports written before it) the job folder the export
    lies in (OUT/ or OUT/export/)."""
    from netslim.io.artifact import read_manifest

    beside = onnx.parent / EXPORT_JOB
    if beside.is_file():
        job = json.loads(beside.read_text())
        return job.get("spec"), job.get("report"), str(beside)
    for folder in (onnx.parent, onnx.parent.parent):
        report = read_job_report(folder)
        if report is not None:
            saved = folder / "model"
            if not (saved / MANIFEST).is_file():
                return None, report, str(folder)
            return read_manifest(saved)["spec"], report, str(saved / MANIFEST)
    return None, None, str(onnx)


def _job_architecture(spec: dict[str, Any] | None, origin: str, trust_code: bool) -> Any:
    """The job's model as its spec builds it (its trained weights are not needed): data is then
    read as the job read it, with the model's preprocessing (timm's data config, torchvision's
    transforms) and its tokenizer. None without a spec, or when the spec would run code and
    ``trust_code`` is off (data is then read without a model)."""
    from netslim.models.spec import build_from_spec, code_to_run

    if not isinstance(spec, dict) or (code_to_run(spec) and not trust_code):
        return None
    return build_from_spec(spec, trust_code=trust_code, origin=origin)


def evaluate_onnx(
    onnx: Path,
    *,
    data: str | None = None,
    limit_test: int | None = None,
    example_shape: list[int] | None = None,
    latency: bool = True,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Accuracy (onnxruntime on the test split), median latency and file size of an export;
    ``trust_code``: see :func:`_job_architecture`."""
    import time

    import numpy as np
    import torch

    from netslim.export.onnx import run_onnx, session

    try:
        sess = session(onnx)
    except Exception as exc:  # onnxruntime's own errors for unreadable files
        raise ArtifactError(f"{onnx} is not a readable ONNX model: {exc}") from None
    spec, report, origin = _job_of(onnx)
    settings = (report or {}).get("settings", {})
    data = _data_to_measure(data, settings)
    measured: dict[str, Any] = {"format": "onnx", "path": str(onnx)}
    measured["size_bytes"] = onnx.stat().st_size
    loader = None
    if data:
        loader = _test_loader(
            data, settings, limit_test, _job_architecture(spec, origin, trust_code)
        )
    if loader is not None:
        _check_onnx_fits(onnx, sess, loader, data)
        correct = seen = 0
        for batch in loader:
            inputs, labels = batch[0], batch[1]
            try:
                logits = run_onnx(sess, (inputs,))[0]
            except Exception:  # an export with a fixed batch dimension: one row at a time
                logits = np.concatenate([run_onnx(sess, (row[None],))[0] for row in inputs])
            correct += int((torch.from_numpy(logits).argmax(-1) == labels).sum())
            seen += labels.numel()
        measured["accuracy"] = correct / seen if seen else None
    if latency:
        shape = example_shape or job_example_shape(report)
        if shape is None:
            dims = sess.get_inputs()[0].shape
            shape = [d if isinstance(d, int) else 1 for d in dims]
        x = torch.randn(*shape)
        times = []
        for _ in range(25):
            started = time.perf_counter()
            run_onnx(sess, (x,))
            times.append(1e3 * (time.perf_counter() - started))
        measured["latency_ms"] = float(np.median(times[5:]))
    result: dict[str, Any] = {"measured": measured}
    if report is not None:
        result["report"] = report
    return result
