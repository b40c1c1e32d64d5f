"""Time one convolution or linear layer at given widths on a runtime, with an on-disk cache.

A latency table is built from many such points (a layer at a grid of kept widths). Points are
keyed by everything that changes the time (op shape, runtime, threads, machine, library
versions), so models that share layer shapes share measurements, and a second planning run on
the same machine measures nothing.

Runtimes: ``torch`` (eager on CPU, ``threads`` intra-op threads), ``onnxruntime`` (CPU
execution provider, the op as a one-node graph) and ``cuda`` (eager on the first GPU, timed
with synchronisation; a clear error when no GPU is visible).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netslim._runtime import allocator
from netslim.core.batches import to_device
from netslim.core.config import choice
from netslim.core.copying import copy_model
from netslim.errors import ConfigError, UnsupportedModelError
from netslim.export.onnx import require_onnxruntime, session

RUNTIMES = ("torch", "onnxruntime", "cuda")


@dataclass(frozen=True)
class OpShape:
    """One conv/linear call: widths, the geometry that does not change, and the leading dims.

    ``spatial``: a conv's input spatial size, or a linear's input dims between batch and
    features (tokens); ``groups``: a conv's group count (a depthwise conv has groups == cin)."""

    kind: str  # "conv" | "linear"
    cin: int
    cout: int
    batch: int
    spatial: tuple[int, ...] = ()
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True

    def key(self) -> str:
        geo = ",".join(
            "x".join(map(str, v))
            for v in (self.spatial, self.kernel, self.stride, self.padding, self.dilation)
        )
        return f"{self.kind}|{self.cin}|{self.cout}|{self.batch}|{geo}|g{self.groups}|b{int(self.bias)}"

    def with_widths(self, cin: int, cout: int, groups: int | None = None) -> OpShape:
        return replace(self, cin=cin, cout=cout, groups=self.groups if groups is None else groups)


@dataclass(frozen=True)
class Target:
    """Where the time is measured: runtime, intra-op threads, batch size."""

    runtime: str = "torch"
    threads: int = 1
    batch: int = 1

    def __post_init__(self) -> None:
        check_target(self.runtime, self.threads, self.batch)

    def key(self) -> str:
        """The cache key: this target on this machine with these library versions."""
        parts = [
            self.runtime,
            f"t{self.threads}",
            f"b{self.batch}",
            cpu_name(),
            f"{os.cpu_count()}cpu",
            f"torch{torch.__version__}",
        ]
        if self.runtime == "onnxruntime":
            parts.append(f"ort{_ort_version()}|nospin")  # tables before this spun (onnx.session)
        if self.runtime == "cuda" and torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name(0))
        if allocator() != "system":  # freed memory kept or not: eager CPU times differ 2x
            parts.append(f"alloc={allocator()}")
        return "|".join(parts)


def check_target(runtime: Any, threads: Any, batch: Any) -> None:
    """ConfigError for an unknown runtime or a non-positive thread count or batch."""
    choice("runtime", runtime, RUNTIMES)
    for name, v in (("threads", threads), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive int, got {v!r}")


def width_multiple(runtime: str) -> int:
    """The channel multiple a runtime's fast kernels want from a plan (1: none).

    ONNX Runtime's CPU provider runs a convolution in its blocked NCHWc layout (8 channels a
    block with AVX2, 16 with AVX-512) only when its channel counts are whole blocks; a conv of
    any other width falls back to plain NCHW, with layout reorders around it, in the middle of
    the graph. A layer timed alone pays for those reorders at every width, so the table cannot
    see the difference and the plan has to take it as a rule. docs/latency.md (run 00:34 of
    2026-12-02): at the same MACs, Torch-Pruning's uniform round_to=8 ran faster than every
    ONNX Runtime plan of free widths on ResNet-50 and MobileNetV2."""
    if runtime != "onnxruntime":
        return 1
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def cpu_name() -> str:
    """The CPU model: part of a table's cache key, and named in every bench's machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return "none"


def cache_dir() -> Path:
    """``$NETSLIM_CACHE_DIR/latency`` or ``~/.cache/netslim/latency``."""
    root = os.environ.get("NETSLIM_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "netslim"
    return base / "latency"


class PointCache:
    """Measured points of one target, one JSON file; merged on save (parallel runs add).
    A whole-model point may carry the kept widths it was measured at (``widths``), so a later
    table can fit it again.

    ``refresh``: read nothing, measure every point again and let the new values replace the
    cached ones on save (a table measured while other work loaded the machine is wrong for a
    quiet one, and the key cannot tell them apart)."""

    def __init__(self, target: Target, directory: Path | None = None, *, refresh: bool = False):
        self.target = target
        digest = hashlib.sha1(target.key().encode()).hexdigest()[:16]
        self.path = (directory or cache_dir()) / f"{digest}.json"
        self.points: dict[str, float] = {}
        self.widths: dict[str, dict[str, int]] = {}
        self.dirty = False
        if self.path.exists() and not refresh:
            try:
                payload = json.loads(self.path.read_text())
                self.points = payload.get("points", {})
                self.widths = payload.get("widths", {})
            except (OSError, ValueError, AttributeError):
                self.points, self.widths = {}, {}  # a corrupt cache is re-measured, never trusted

    def get(self, key: str) -> float | None:
        return self.points.get(key)

    def put(self, key: str, ms: float, widths: dict[str, int] | None = None) -> None:
        self.points[key] = ms
        if widths is not None:
            self.widths[key] = dict(widths)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        points, widths = dict(self.points), dict(self.widths)
        if self.path.exists():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                disk = json.loads(self.path.read_text())
                points = {**disk.get("points", {}), **self.points}
                widths = {**disk.get("widths", {}), **self.widths}
        payload = {"target": self.target.key(), "points": points, "widths": widths}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle)
        os.replace(tmp, self.path)
        self.dirty = False


MAX_SAMPLES = 100
WHOLE_MODEL_S = 0.3
"""Whole-model timings (table calibration points, plan checks, reports) sample for at least
this long, so that a slowdown of a few tens of ms is a minority of the samples (with 3-5 samples
of a 6-50 ms model it could cover them all). The machine's speed also drifts by 5-10% over
minutes on a shared host; no sampling window removes that (docs/latency.md, the speed notes)."""


def median_ms(
    fn: Callable[[], Any],
    sync: Callable[[], None] = lambda: None,
    *,
    samples: int = 7,
    min_sample_s: float = 3e-4,
    min_total_s: float = 0.0,
) -> float:
    """Time of one ``fn()`` call (lower quartile over ``samples`` timed batches of calls, each
    long enough, ``min_sample_s``, that the clock's resolution does not matter), after two
    warm-up calls. ``min_total_s``: keep sampling (up to ``MAX_SAMPLES``) until the samples
    span that long, so that one passing slowdown of the machine cannot cover all of them."""
    fn()
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, min(200, int(min_sample_s / once)))
    if once > 0.05:  # long calls vary less and cost more: fewer samples
        samples = min(samples, 3)
    elif once > 0.005:
        samples = min(samples, 5)
    times: list[float] = []
    spent = 0.0
    while len(times) < samples or (spent < min_total_s and len(times) < MAX_SAMPLES):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        took = time.perf_counter() - start
        spent += took
        times.append(took / inner)
    return robust_ms(times) * 1e3


def robust_ms(times: list[float]) -> float:
    """Lower quartile: on a shared machine a run is only ever *slowed* by others, so the low
    end of the samples is the reproducible one (a median still moves with the load)."""
    if len(times) < 4:
        return min(times)
    return statistics.quantiles(times, n=4, method="inclusive")[0]


def _torch_module(op: OpShape, device: str = "cpu") -> tuple[nn.Module, torch.Tensor]:
    """The op as a module with a random input, both made on ``device``: at a large batch the
    input is hundreds of MB, and drawing it on the CPU and copying it to a GPU cost far more
    than the few calls timed there (the suspected cause of a 245 s ResNet-50 table at batch 128
    on an H200, docs/gpu.md)."""
    gen = torch.Generator(device).manual_seed(0)
    if op.kind == "linear":
        module: nn.Module = nn.Linear(op.cin, op.cout, bias=op.bias, device=device)
        x = torch.randn(op.batch, *op.spatial, op.cin, generator=gen, device=device)
    else:
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(op.spatial)]
        module = conv(
            op.cin, op.cout, op.kernel, op.stride, op.padding, op.dilation, op.groups, op.bias,
            device=device,
        )  # fmt: skip
        x = torch.randn(op.batch, op.cin, *op.spatial, generator=gen, device=device)
    return module.eval(), x


def time_torch(op: OpShape, threads: int, device: str = "cpu") -> float:
    module, x = _torch_module(op, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return median_ms(lambda: module(x), sync)
    finally:
        torch.set_num_threads(old)


def _onnx_graph(op: OpShape):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    if op.kind == "linear":
        w = rng.standard_normal((op.cin, op.cout), dtype=np.float32)
        inits.append(numpy_helper.from_array(w, "W"))
        shape = [op.batch, *op.spatial, op.cin]
        out = "y" if not op.bias else "mm"
        nodes.append(helper.make_node("MatMul", ["x", "W"], [out]))
        if op.bias:
            inits.append(numpy_helper.from_array(np.zeros(op.cout, np.float32), "B"))
            nodes.append(helper.make_node("Add", ["mm", "B"], ["y"]))
    else:
        w = rng.standard_normal((op.cout, op.cin // op.groups, *op.kernel), dtype=np.float32)
        inits.append(numpy_helper.from_array(w, "W"))
        ins = ["x", "W"]
        if op.bias:
            inits.append(numpy_helper.from_array(np.zeros(op.cout, np.float32), "B"))
            ins.append("B")
        shape = [op.batch, op.cin, *op.spatial]
        nodes.append(
            helper.make_node(
                "Conv",
                ins,
                ["y"],
                kernel_shape=list(op.kernel),
                strides=list(op.stride),
                pads=list(op.padding) * 2,
                dilations=list(op.dilation),
                group=op.groups,
            )
        )
    graph = helper.make_graph(
        nodes,
        "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), shape


def time_onnxruntime(op: OpShape, threads: int) -> float:
    import numpy as np

    data, shape = _onnx_graph(op)
    sess = session(data, threads)
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    return median_ms(lambda: sess.run(None, {"x": x}))


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise ConfigError("runtime 'cuda' needs a CUDA GPU and none is visible to torch")


def require_runtime(runtime: str) -> None:
    """ConfigError when ``runtime`` cannot be timed on this machine (no GPU for cuda, no
    onnxruntime package): checked before any work, not when the table is built."""
    if runtime == "cuda":
        require_cuda()
    elif runtime == "onnxruntime":
        require_onnxruntime()


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks (macOS, Windows)
        return os.cpu_count() or 1


def require_target(target: Target) -> None:
    """ConfigError when ``target`` cannot be timed here: its runtime is missing, or it asks
    for more CPU threads than this process has cores (the threads would take turns, and the
    table would time their contention, not the model: a 2x target on 3 threads of 2 cores
    read an unpruned model 3.6x slower than on 1 and declared itself unreachable)."""
    require_runtime(target.runtime)
    cores = usable_cores()
    if target.runtime != "cuda" and target.threads > cores:
        raise ConfigError(
            f"threads {target.threads} exceeds the {cores} CPU core(s) this process may use: "
            f"timing {target.threads} threads on them measures their contention, not the model; "
            f"time with threads <= {cores}, or plan on the machine the model will run on"
        )


def op_timer(target: Target) -> Callable[[OpShape], float]:
    """The measuring function of ``target``'s runtime (no cache)."""
    require_target(target)
    if target.runtime == "cuda":
        return lambda op: time_torch(op, target.threads, "cuda")
    if target.runtime == "onnxruntime":
        return lambda op: time_onnxruntime(op, target.threads)
    return lambda op: time_torch(op, target.threads)


class CachedTimer:
    """``timer(op) -> ms`` through the disk cache; ``measured`` counts real measurements."""

    def __init__(
        self,
        target: Target,
        timer: Callable[[OpShape], float] | None = None,
        *,
        refresh: bool = False,
    ):
        self.target = target
        self.cache = PointCache(target, refresh=refresh)
        self.timer = timer or op_timer(target)
        self.measured = 0

    def __call__(self, op: OpShape) -> float:
        key = op.key()
        hit = self.cache.get(key)
        if hit is None:
            hit = self.timer(op)
            self.cache.put(key, hit)
            self.measured += 1
        return hit

    def save(self) -> None:
        self.cache.save()


def model_ms(model: nn.Module, inputs: Any, target: Target, samples: int = 9) -> float:
    """Whole-model forward time on ``target`` (eval mode, no autograd; see ``robust_ms``)."""
    with _runner(model, inputs, target) as (run, sync):
        return median_ms(run, sync, samples=samples, min_total_s=WHOLE_MODEL_S)


def faults_per_call(run: Callable[[], Any]) -> int | None:
    """Minor page faults of one ``run()`` after two warm-up calls (mean of two): memory the
    allocator gave back to the kernel and the call touched again. None where the OS does not
    count them."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    run()
    run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run()
    run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 2


INSIDE_CALLS = 11
"""Forwards whose per-layer times :func:`layer_ms_inside` takes the median of (after 3
warm-up forwards)."""


def times_layers_inside(target: Target) -> bool:
    """Whether :func:`layer_ms_inside` can time layers on ``target`` (torch eager on the CPU)."""
    return target.runtime == "torch"


def layer_ms_inside(model: nn.Module, inputs: Any, target: Target) -> dict[str, float]:
    """Each conv / linear module's time *inside* ``model``'s forward on ``target``, by module
    name: forward hooks around it, the median of ``INSIDE_CALLS`` forwards, less what the
    hooks cost around a module that does nothing. Modules called more than once a forward are
    left out. In the model a layer runs with its weights and input cold, evicted by the layers
    before it; alone it runs warm: ResNet-50's layers at batch 1 take 1.11x their isolated time
    inside the dense model and 1.31x with every group at an eighth, MobileNetV2's 1.24x-1.91x
    (docs/latency.md, *Where a fresh table's first plan lands*, run at cfd4a3b; the run at
    a938942 found 1.05-1.36x and 1.34-1.67x: the factors move between runs, so each table
    measures its own). Empty where hooks cannot time a layer: ONNX Runtime runs the graph
    whole, a GPU runs asynchronously."""
    if not times_layers_inside(target):
        return {}
    starts: list[float] = []
    times: dict[str, list[float]] = {}

    def hook(module: nn.Module, name: str) -> list[Any]:
        return [
            module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())),
            module.register_forward_hook(
                lambda *_: times.setdefault(name, []).append(time.perf_counter() - starts.pop())
            ),
        ]

    hooks = [
        h
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        for h in hook(module, name)
    ]
    idle = nn.Identity()
    hooks += hook(idle, "\0idle")
    try:
        with _runner(model, inputs, target) as (run, _):
            for _ in range(3):
                run()
            times.clear()
            for _ in range(INSIDE_CALLS):
                run()
                idle(None)
    finally:
        for h in hooks:
            h.remove()
    cost = statistics.median(times.pop("\0idle"))
    return {
        n: 1e3 * max(statistics.median(t) - cost, 0.5 * min(t))
        for n, t in times.items()
        if len(t) == INSIDE_CALLS
    }


def model_faults(model: nn.Module, inputs: Any, target: Target) -> int | None:
    """:func:`faults_per_call` of ``model``'s forward on ``target``."""
    with _runner(model, inputs, target) as (run, sync):
        return faults_per_call(lambda: (run(), sync()))


PAIRED_S = 0.6
"""How long :func:`time_ratio` alternates its two models (after one warm-up call each); at
least ``MIN_ROUNDS`` rounds and at most ``MAX_ROUNDS`` (tiny models)."""
MIN_ROUNDS, MAX_ROUNDS = 3, 2500  # three: the median then outvotes one round a burst hit


def time_ratio(model: nn.Module, reference: nn.Module, inputs: Any, target: Target) -> float:
    """``model``'s forward time over ``reference``'s on ``target``, measured *paired*: the two
    run alternately in palindromic rounds (cheaper, costlier, cheaper: the costlier of the two,
    found by their warm-up calls, runs once a round) for ``PAIRED_S``, and the median of the
    rounds' ratios is returned. On a shared host the machine's speed moves by 10-25% between
    seconds; a slowdown hits both models of a round alike, and one that grows or fades steadily
    through a round cancels, the cheaper model's two calls being centred on the costlier one's,
    so the ratio holds within a few percent where two separate timings, seconds apart, do not
    (docs/latency.md). Calling the costlier model once a round, not twice as the mirror order
    (model, reference, reference, model) did, makes a plan check a third cheaper: a 3x-pruned
    ResNet-50 is timed against its dense model, three times slower."""
    with (
        _runner(model, inputs, target) as (run_a, sync),
        _runner(reference, inputs, target) as (run_b, _),
    ):

        def timed(run: Callable[[], Any]) -> float:
            start = time.perf_counter()
            run()
            sync()
            return time.perf_counter() - start

        model_first = timed(run_a) <= timed(run_b)  # warm-up calls; the cheaper one goes outside
        outer, inner = (run_a, run_b) if model_first else (run_b, run_a)
        ratios: list[float] = []
        end = time.perf_counter() + PAIRED_S
        while len(ratios) < MIN_ROUNDS or (time.perf_counter() < end and len(ratios) < MAX_ROUNDS):
            first, middle, last = timed(outer), timed(inner), timed(outer)
            ratio = (first + last) / max(2 * middle, 1e-12)
            ratios.append(ratio if model_first else 1 / max(ratio, 1e-12))
        return statistics.median(ratios)


@contextlib.contextmanager
def _runner(model: nn.Module, inputs: Any, target: Target):
    """``(run, sync)``: one forward of ``model`` on ``target``'s runtime, threads and device."""
    from netslim.measure._call import call, inference

    if target.runtime == "onnxruntime":
        yield _prepared(model, inputs, target, _onnx_runner), (lambda: None)
        return
    device = "cuda" if target.runtime == "cuda" else "cpu"
    if device == "cuda":
        require_cuda()
        model, inputs = _prepared(model, inputs, target, _device_copy)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    old = torch.get_num_threads()
    torch.set_num_threads(target.threads)
    try:
        with inference(model):
            yield (lambda: call(model, inputs)), sync
    finally:
        torch.set_num_threads(old)


PREPARED_KEPT = 2
"""Prepared forms (an ONNX Runtime session, a GPU copy) of the last models timed, reused while
the model object and its shapes are the same: a plan's checks and calibration points all time
against one dense model, and exporting it again for each took most of a check (ResNet-50 on
ONNX Runtime: 13-17 s a check)."""
_prepared_runs: list[tuple[weakref.ref, tuple, Any]] = []


def _prepared(model: nn.Module, inputs: Any, target: Target, prepare: Callable) -> Any:
    """``prepare(model, inputs, target)``, reused for the same model object with the same
    parameter, buffer and input shapes (time depends on shapes, not values; a model pruned in
    place has new shapes and is prepared again)."""
    from netslim.structural.trace import flatten_tensors

    key = (
        target,
        prepare.__name__,
        tuple(tuple(t.shape) for t in (*model.parameters(), *model.buffers())),
        tuple(tuple(t.shape) for t in flatten_tensors(inputs)),
    )
    for ref, seen, done in _prepared_runs:
        if ref() is model and seen == key:
            return done
    done = prepare(model, inputs, target)
    _prepared_runs.insert(0, (weakref.ref(model), key, done))
    del _prepared_runs[PREPARED_KEPT:]
    return done


def _device_copy(model: nn.Module, inputs: Any, target: Target) -> tuple[nn.Module, Any]:
    """A copy of ``model`` and ``inputs`` on ``target``'s GPU."""
    return copy_model(model).to("cuda"), to_device(inputs, "cuda")


def _onnx_runner(model: nn.Module, inputs: Any, target: Target) -> Callable[[], Any]:
    """One onnxruntime CPU forward of ``model`` (exported once) on ``inputs``."""
    import io

    import numpy as np

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        was = model.training
        model.eval()
        try:
            with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                program = torch.onnx.export(model, args, dynamo=True, verbose=False)
        except Exception as exc:
            raise UnsupportedModelError(
                f"ONNX export for runtime 'onnxruntime' failed: {type(exc).__name__}: {exc!s:.200}"
            ) from exc
        finally:
            model.train(was)
        program.save(str(path))
        sess = session(path, target.threads)
    feeds = {
        i.name: np.asarray(x.detach().cpu()) for i, x in zip(sess.get_inputs(), args, strict=True)
    }
    return lambda: sess.run(None, feeds)
