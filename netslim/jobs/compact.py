"""``netslim compact``'s job: load a saved model (or build a spec), compact it, save the
smaller model and ``compact.json`` (what was removed, folded and kept; params, MACs, latency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn


def load_source(source: str, *, trust_code: bool = False) -> nn.Module:
    """A saved directory (or a job directory with model/), else a model spec. A saved ``py:``
    spec runs its file only with ``trust_code`` (a spec typed on the command line is consent)."""
    from netslim.io import load
    from netslim.jobs.evaluation import locate
    from netslim.models.spec import build_model, parse_spec

    path = Path(source)
    if path.exists():
        return load(locate(path)[0], trust_code=trust_code)
    parse_spec(source)  # a bad spec fails here, before anything is built
    return build_model(source)


def default_out(source: str) -> Path:
    """``DIR-compact`` beside a saved directory, ``runs/<spec>-compact`` for a spec."""
    from netslim.jobs.settings import default_run_dir

    if Path(source).exists():
        return Path(f"{source.rstrip('/')}-compact")
    return default_run_dir(source, "compact")


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few human lines."""
    from netslim.structural.compact import summary

    s = summary(report)
    p, m = report["params"], report["macs"]
    out = [
        f"parameters {p['before']:,} -> {p['after']:,}   MACs {m['before']:,} -> {m['after']:,}",
        "removed " + (", ".join(f"{n} {k}" for k, n in s["removed"].items()) or "nothing"),
    ]
    if s["kept"]:
        out.append("kept " + ", ".join(f"{n} ({k})" for k, n in s["kept"].items()))
    if "latency_ms" in report:
        lat = report["latency_ms"]
        out.append(f"latency {lat['before']:.3f} -> {lat.get('after', lat['before']):.3f} ms")
    snap = report.get("snapped")
    if snap:
        out.append(
            f"snapped {snap['channels']} channels with unit norm <= {snap['zero_tol']:g} to zero"
            f" (largest {snap['largest_norm']:.3g}; output moved by {snap.get('max_abs_diff', 0):.3g})"
        )
    out.append(f"max abs difference {report['max_abs_diff']:.3g}")
    return out


def compact_job(
    source: str,
    out: Path,
    *,
    example_shape: list[int] | None = None,
    probes: int = 2,
    latency: bool = True,
    zero_tol: float = 0.0,
    trust_code: bool = False,
    weights: str | None = None,
) -> dict[str, Any]:
    """Compact ``source`` (a saved directory, or a spec with its ``weights``) into ``out``."""
    from netslim.errors import ConfigError
    from netslim.io import save
    from netslim.jobs.evaluation import job_example_shape, locate
    from netslim.jobs.preflight import check_example_fits
    from netslim.models.spec import make_example_inputs
    from netslim.structural.compact import compact_

    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 0:
        raise ConfigError(f"probes must be an int >= 0, got {probes!r}")
    if isinstance(zero_tol, bool) or not isinstance(zero_tol, (int, float)) or not zero_tol >= 0:
        raise ConfigError(f"--zero-tol must be a number >= 0, got {zero_tol!r}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if weights is not None and Path(source).exists():
        raise ConfigError(f"--weights goes with a model spec; {source} is a saved model")
    model = load_source(source, trust_code=trust_code).eval()
    if weights is not None:
        from netslim.models.weights import load_weights

        load_weights(model, weights)
    source_report = locate(Path(source))[1] if Path(source).exists() else None
    example = make_example_inputs(model, example_shape or job_example_shape(source_report))
    check_example_fits(model, example, source)
    report = compact_(model, example, probes=probes, latency=latency, zero_tol=zero_tol)
    # what eval and export of the result read: the shape it ran at, the source job's data
    report["example_shape"] = list(example[0].shape)
    if source_report is not None and "settings" in source_report:
        report["settings"] = source_report["settings"]
    out.mkdir(parents=True, exist_ok=True)
    save(model, out / "model")
    (out / "compact.json").write_text(json.dumps(report, indent=2))
    return report
