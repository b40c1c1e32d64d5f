"""``netslim eval``: re-measure a saved result in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netslim.errors import ArtifactError
from netslim.io import load
from netslim.io.artifact import MANIFEST


def locate(directory: Path) -> tuple[Path, dict[str, Any] | None]:
    """Accept either a job directory (report.json + model/) or a bare saved model directory."""
    if (directory / MANIFEST).is_file():
        report_path = directory.parent / "report.json"
        return directory, json.loads(report_path.read_text()) if report_path.is_file() else None
    if (directory / "model" / MANIFEST).is_file():
        report_path = directory / "report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
        return directory / "model", report
    raise ArtifactError(
        f"{directory} holds no netslim model (expected {MANIFEST} or model/{MANIFEST})"
    )


def evaluate_saved(
    directory: Path,
    *,
    data: str | None = None,
    limit_test: int | None = None,
    example_shape: list[int] | None = None,
    latency: bool = True,
    trust_code: bool = False,
) -> dict[str, Any]:
    from netslim.measure import measure
    from netslim.models.spec import make_example_inputs
    from netslim.training import evaluate

    path = Path(directory)
    if path.is_file() and path.suffix == ".nsz":  # a compressed artifact (netslim compress)
        from netslim.compress import decompress

        model = decompress(path, trust_code=trust_code)
        report_path = path.parent / "report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
    else:
        model_dir, report = locate(path)
        model = load(model_dir, trust_code=trust_code)
    settings = (report or {}).get("settings", {})
    data = data or settings.get("data")
    shape = example_shape or settings.get("example_shape")
    loader = None
    if data:
        from netslim.data import make_loaders

        _, loader = make_loaders(data, limit_test=limit_test or settings.get("limit_test"))
    measured = measure(
        model, make_example_inputs(model, shape), loader=loader, evaluate=evaluate, latency=latency
    )
    result: dict[str, Any] = {"measured": measured}
    if report is not None:
        result["report"] = report
    return result
