"""Model coverage of structural pruning, netslim vs Torch-Pruning: docs/coverage.md + results json.

    .venv/bin/python bench/coverage.py [--quick | --added] [--family F[,F]] [--models a,b] [--tools netslim,tp]
                                       [--jobs N] [--timeout S] [--resume] [--report-only]

Every (model, tool) runs in its own subprocess with a time limit; peak RSS is the child's
``ru_maxrss``. netslim prunes with ``Channels(ratio=0.5)`` (model outputs, hence classifiers, are
kept by the engine itself) and is checked for *equivalence*: the pruned model against
``masked_reference`` (the original with the removed channels zeroed) on fresh inputs. TP runs
``BasePruner(GroupMagnitudeImportance(p=2), pruning_ratio=0.5)`` as the anchor file describes and
is checked the way the anchor does: the pruned forward runs with the same output shape.
Results are merged into docs/results/coverage.json after every model, so runs can be sliced.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, machine_line  # noqa: E402

JSON_PATH = RESULTS / "coverage.json"
ABS_TOL = 1e-5
REL_TOL = 1e-5  # relative to the reference output's max |value|, for large-magnitude outputs
TOOLS = ("netslim", "tp")


# -- worker side --------------------------------------------------------------------------------


class _Progress:
    """Writes the partial result after each stage: a killed worker still tells where it was."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"stage": "start"}

    def update(self, **kw: Any) -> None:
        self.data.update(kw)
        Path(self.path).write_text(json.dumps(self.data))


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: Any, inputs: tuple) -> int | None:
    from netslim.measure import count_macs

    try:
        return int(count_macs(model, inputs))
    except Exception:
        return None


def _shapes(out: Any, family: str) -> list:
    """Output shapes; detection boxes vary in count with the weights, so compare trailing dims."""
    from netslim.structural.graph import flatten_tensors

    ts = flatten_tensors(out)
    if family == "torchvision_det":
        return [tuple(t.shape[1:]) for t in ts]
    return [tuple(t.shape) for t in ts]


def work_netslim(family: str, name: str, prog: _Progress) -> None:
    import copy

    import torch
    from _coverage_models import build, check_inputs
    from structural_speed import PeakRSS

    from netslim.errors import ConfigError, PruningError
    from netslim.structural import Channels, masked_reference, prune
    from netslim.structural.verify import max_abs_diff

    prog.update(stage="build")
    model, inputs, facts = build(family, name)
    prog.update(**facts, params_before=_params(model), macs_before=_macs(model, inputs))
    original = copy.deepcopy(model)
    prog.update(stage="prune")
    t0 = time.perf_counter()
    try:
        with PeakRSS() as mem:
            plan, report = prune(model, inputs, Channels(ratio=0.5))
    except ConfigError as exc:
        prog.update(status="fail_trace", error=f"{type(exc).__name__}: {exc}"[:400])
        return
    except PruningError as exc:
        prog.update(status="fail_prune", error=f"{type(exc).__name__}: {exc}"[:400])
        return
    prog.update(
        prune_seconds=round(time.perf_counter() - t0, 3),
        prune_extra_rss_mb=round((mem.peak - mem.base) / 2**20, 1),
        groups=report["groups"],
        boundaries=len(report["boundaries"]),
        boundary_samples=[
            f"{b['op']}@{b['module']}: {b['reason']}"[:160] for b in report["boundaries"][:3]
        ],  # fmt: skip
        params_after=_params(model),
        stage="check",
    )
    check = check_inputs(family, inputs)
    ref = masked_reference(original, plan, inputs)
    del original
    model.eval()
    with torch.no_grad():
        got = _compared_outputs(model, model, check, family)
        want = _compared_outputs(ref, ref.model, check, family)
    try:
        diff = max_abs_diff(got, want)
    except AssertionError as exc:
        prog.update(status="mismatch", error=f"outputs differ in structure: {exc}"[:400])
        return
    scale = max((t.abs().max().item() for t in _float_tensors(want)), default=0.0)
    rel = diff / scale if scale > 0 else diff
    ok_abs, ok_rel = diff <= ABS_TOL, rel <= REL_TOL
    prog.update(
        max_abs_diff=diff,
        rel_diff=rel,
        tolerance="abs" if ok_abs else ("rel" if ok_rel else "-"),
        status="ok" if (ok_abs or ok_rel) else "mismatch",
        macs_after=_macs(model, inputs),
        stage="done",
    )


def _compared_outputs(runner: Any, module: Any, inputs: Any, family: str) -> Any:
    """What equivalence is checked on. Detection models: the dense head's raw outputs (before
    NMS): which boxes survive NMS flips on float noise when random weights give tied scores."""
    from netslim.structural.forward import run_model

    if family != "torchvision_det":
        return run_model(runner, inputs)
    head = module.rpn.head if hasattr(module, "rpn") else module.head
    seen: list = []
    handle = head.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        run_model(runner, inputs)
    finally:
        handle.remove()
    return seen


def _float_tensors(obj: Any) -> list:
    from netslim.structural.graph import flatten_tensors

    return [t for t in flatten_tensors(obj) if t.is_floating_point() and t.numel()]


def work_tp(family: str, name: str, prog: _Progress) -> None:
    import torch
    import torch_pruning as tp
    from _coverage_models import build, tp_extra, tp_fixups, tp_ignored

    prog.update(stage="build")
    model, inputs, facts = build(family, name)
    prog.update(**facts, params_before=_params(model), macs_before=_macs(model, inputs))
    with torch.no_grad():
        want = _shapes(model(*inputs), family)
    extra = tp_extra(family, name, model)
    round_to = extra.pop("round_to", None)
    prog.update(stage="graph_build")
    t0 = time.perf_counter()
    try:
        pruner = tp.pruner.BasePruner(
            model, inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=0.5, ignored_layers=tp_ignored(family, name, model), round_to=round_to,
            **extra,
        )  # fmt: skip
    except Exception as exc:
        prog.update(status="fail_build", error=f"{type(exc).__name__}: {exc}"[:400])
        return
    prog.update(stage="prune_step", build_seconds=round(time.perf_counter() - t0, 3))
    try:
        pruner.step()
    except Exception as exc:
        prog.update(status="fail_prune", error=f"{type(exc).__name__}: {exc}"[:400])
        return
    prog.update(
        prune_seconds=round(time.perf_counter() - t0, 3), params_after=_params(model),
        stage="forward",
    )  # fmt: skip
    fixups = False
    try:
        with torch.no_grad():
            got = _shapes(model(*inputs), family)
    except Exception:
        fixups = True
        try:
            tp_fixups(family, name, model)
            with torch.no_grad():
                got = _shapes(model(*inputs), family)
        except Exception as exc:
            prog.update(status="fail_forward", error=f"{type(exc).__name__}: {exc}"[:400])
            return
    status = "ok" if got == want else "shape_mismatch"
    if status != "ok":
        diff = [(w, g) for w, g in zip(want, got, strict=False) if w != g][:2]
        prog.update(error=f"output shapes changed (before, after): {diff}"[:400])
    prog.update(status=status, manual_fixups=fixups, macs_after=_macs(model, inputs), stage="done")


def worker(tool: str, family: str, name: str, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    prog = _Progress(out)
    try:
        (work_netslim if tool == "netslim" else work_tp)(family, name, prog)
    except Exception as exc:  # a crash in our own harness or in the model: still one row
        prog.update(status="fail_other", error=f"{type(exc).__name__}: {exc}"[:400])


# -- runner side --------------------------------------------------------------------------------


def run_one(tool: str, family: str, name: str, timeout: float) -> dict[str, Any]:
    """One subprocess; kill it at ``timeout``; peak RSS from ``wait4``."""
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__)), "--worker", tool, family, name, out]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    timer.cancel()
    try:
        data = json.loads(Path(out).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        data = {}
    Path(out).unlink(missing_ok=True)
    data["wall_seconds"] = round(time.perf_counter() - t0, 1)
    data["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    if killed.is_set():
        data["status"] = "timeout"
        data["error"] = f"timeout: exceeded {timeout:.0f}s (was in stage {data.get('stage')!r})"
    elif "status" not in data:
        data["status"] = "fail_other"
        tail = stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        if proc.returncode == -signal.SIGKILL:  # not our timer: the kernel's OOM killer
            tail = [f"killed by the OS at {data['peak_rss_mb']:.0f} MB peak RSS (out of memory)"]
        data["error"] = f"worker died in stage {data.get('stage')!r}: {tail[0]}"[:400]
    return data


def load() -> dict[str, Any]:
    if JSON_PATH.exists():
        return json.loads(JSON_PATH.read_text())
    return {"meta": {}, "results": {}}


def save(db: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = JSON_PATH.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(db, indent=1, sort_keys=True))
    tmp.replace(JSON_PATH)


def select(args: argparse.Namespace) -> list[tuple[str, str]]:
    from _coverage_models import QUICK, all_models

    models = list(QUICK) if args.quick else all_models()
    if args.added:
        from _coverage_added import added_models

        models = added_models()
    if args.family:
        fams = set(args.family.split(","))
        models = [m for m in models if m[0] in fams]
    if args.models:
        wanted = set(args.models.split(","))
        models = [m for m in models if m[1] in wanted or f"{m[0]}/{m[1]}" in wanted]
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker", nargs=4, metavar=("TOOL", "FAMILY", "MODEL", "OUT"))
    ap.add_argument("--quick", action="store_true", help="a handful of models, one per family")
    ap.add_argument("--added", action="store_true", help="only the models added for #18")
    ap.add_argument("--family", help="comma list: torchvision_cls,torchvision_seg,...,timm,hf")
    ap.add_argument("--models", help="comma list of model names (or family/name)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--jobs", type=int, default=1, help="models in parallel (default 1)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per model and tool")
    ap.add_argument("--resume", action="store_true", help="skip (model, tool) already in json")
    ap.add_argument("--report-only", action="store_true", help="rewrite docs/coverage.md only")
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    from _coverage_report import write_report

    db = load()
    if not args.report_only:
        tools = [t for t in args.tools.split(",") if t]
        todo = [
            (tool, fam, name)
            for fam, name in select(args)
            for tool in tools
            if not (args.resume and tool in db["results"].get(f"{fam}/{name}", {}))
        ]
        lock = threading.Lock()
        db["meta"] = {"machine": machine_line(), "timeout_s": args.timeout, "jobs": args.jobs}

        def task(job: tuple[str, str, str]) -> None:
            tool, fam, name = job
            row = run_one(tool, fam, name, args.timeout)
            with lock:  # merge into the file as it is now: slices may run side by side
                fresh = load()
                fresh["meta"] = db["meta"]
                fresh["results"].setdefault(f"{fam}/{name}", {})[tool] = row
                save(fresh)
                db["results"] = fresh["results"]
                print(f"{fam}/{name} [{tool}]: {row['status']} {row.get('error', '')}"[:200],
                      flush=True)  # fmt: skip

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(task, todo))
    print(write_report(db))


if __name__ == "__main__":
    main()
