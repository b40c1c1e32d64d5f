"""The traced graph: atoms for every tensor dim of one forward, and light records of the ops
that produced them (op name, module path, atoms, int args). ``trace.py`` fills it, ``rules.py``
refines it op by op, and the later stages (groups, plan, apply, oracle) read it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netslim.core.masks import WeightMask, canonical_name
from netslim.structural.atoms import Atoms


@dataclass
class OpRecord:
    """What later stages need to know about one traced op."""

    index: int
    name: str
    stack: tuple[str, ...]
    kind: str
    ins: list[list[int]]
    outs: list[list[int]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.stack[-1] if self.stack else ""


@dataclass
class Boundary:
    """An op the algebra could not express; the channels it touches are kept."""

    op: str
    module: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"op": self.op, "module": self.module, "reason": self.reason}


_LEAF_TYPES = frozenset(
    {int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
     torch.memory_format, torch.Size}
)  # fmt: skip


def flatten_tensors(obj: Any) -> list[torch.Tensor]:
    """Tensors inside nested tuples/lists/dicts/ModelOutputs/dataclasses, in order."""
    out: list[torch.Tensor] = []
    seen: set[int] = set()

    def walk(o: Any) -> None:
        if type(o) in _LEAF_TYPES:  # op args are mostly these; Mapping's ABC check is slow
            return
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif id(o) in seen:
            return
        elif isinstance(o, Mapping):
            seen.add(id(o))
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            seen.add(id(o))
            for v in o:
                walk(v)
        elif hasattr(o, "__dataclass_fields__"):
            seen.add(id(o))
            for name in o.__dataclass_fields__:
                walk(getattr(o, name, None))

    walk(obj)
    return out


class Graph:
    """Atoms for every traced tensor dim, plus the records of the ops that produced them."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.atoms = Atoms()
        self.layouts: dict[int, tuple[torch.Tensor, list[int]]] = {}
        self.records: list[OpRecord] = []
        self.boundaries: list[Boundary] = []
        self.stack: list[str] = []
        # id(tensor) -> canonical qualified names (params first, then buffers; tied -> many)
        self.tensor_names: dict[int, list[str]] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        # name -> the object the traced forward sees: the tensor itself, or its meta twin
        self.traced: dict[str, torch.Tensor] = self.tensors
        self.on_meta = False
        self.is_param: dict[str, bool] = {}
        self._by_storage: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            self._register(name, p, True)
        for name, b in model.named_buffers(remove_duplicate=False):
            if b is not None:
                self._register(name, b, False)
        # netslim's bool weight masks: sliced with their weight, never locked as index buffers
        self.mask_names = {
            f"{path}.mask" if path else "mask"
            for path, m in model.named_modules()
            if isinstance(m, WeightMask)
        }
        self.used: list[str] = []  # canonical names of params/buffers met in the trace
        # scalars the forward computed from Python numbers alone (``torch.tensor(C).sqrt()``):
        # id -> tensor, kept alive so ids stay unique
        self.constants: dict[int, torch.Tensor] = {}
        self.model_outputs: list[list[int]] = []
        # records[:n_eval] are the eval forward, op for op (validation and the oracle replay
        # it); later records come from modules that run only in train mode (attrs need them)
        self.n_eval: int | None = None
        # module path -> atoms of every tensor it returned (``Channels.ignore`` keeps them)
        self.module_outputs: dict[str, list[int]] = {}
        # counts the code ties without tying indices (``ties.CountTie``; found by the repair)
        self.count_ties: list[Any] = []

    def trace_on(self, twins: dict[str, torch.Tensor]) -> None:
        """The forward will see ``twins[name]`` (meta tensors) in place of the parameters."""
        self._real_names = self.tensor_names
        self.tensor_names = {id(twins[ns[0]]): ns for ns in self._real_names.values()}
        self.traced = twins
        self.on_meta = True

    def adopt_real(self) -> None:
        """After a meta trace: key every layout and name by the real tensors again, so later
        stages (and a second, real train-mode trace) see the model's own parameters."""
        for name, real in self.tensors.items():
            twin = self.traced[name]
            hit = self.layouts.pop(id(twin), None)
            if hit is not None and hit[0] is twin:
                self.layouts[id(real)] = (real, hit[1])
        self.tensor_names = self._real_names
        self.traced = self.tensors

    def effective(self) -> dict[str, torch.Tensor]:
        """Every tensor under the name that survives masking (``fc.weight``, not
        ``fc.parametrizations.weight.original``), holding what the forward computes with: a
        masked weight is ``original * mask``, so scores and zero checks see the masked values."""
        out: dict[str, torch.Tensor] = {}
        for name, t in self.tensors.items():
            plain = canonical_name(name)
            if plain != name:
                path, _, leaf = plain.rpartition(".")
                with torch.no_grad():
                    t = getattr(self.model.get_submodule(path), leaf).detach()
            out[plain] = t
        return out

    @property
    def eval_records(self) -> list[OpRecord]:
        return self.records if self.n_eval is None else self.records[: self.n_eval]

    def _register(self, name: str, t: torch.Tensor, is_param: bool) -> None:
        names = self.tensor_names.setdefault(id(t), [])
        names.append(name)
        if len(names) == 1:
            self.tensors[name] = t
            self.is_param[name] = is_param
            with contextlib.suppress(RuntimeError):
                self._by_storage.setdefault(t.untyped_storage().data_ptr(), []).append(name)

    # -- layouts -------------------------------------------------------------------------
    def dims(self, t: torch.Tensor) -> list[int]:
        """Atoms of ``t``; unseen tensors are parameters/buffers (free) or constants (locked)."""
        hit = self.layouts.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        if self.is_state(t):
            name = self.tensor_names[id(t)][0]
            integral = not (t.is_floating_point() or t.is_complex())
            index_buffer = integral and name not in self.mask_names
            lock = "integer buffer (indices/masks)" if index_buffer else None
            atoms = [self.atoms.new(s, lock) for s in t.shape]
            self.used.append(name)
        else:
            atoms = [self.atoms.new(s, "constant") for s in t.shape]
            self._check_alias(t)
        self.layouts[id(t)] = (t, atoms)
        return atoms

    def _check_alias(self, t: torch.Tensor) -> None:
        """A tensor that shares storage with a parameter but was made outside the trace
        (a cached view) would go stale after pruning: keep that parameter whole."""
        if t.is_meta:  # made inside the meta forward: it cannot alias a real parameter
            return
        try:
            ptr = t.untyped_storage().data_ptr()
        except RuntimeError:
            return
        for name in self._by_storage.get(ptr, ()):
            p = self.tensors[name]
            if p.numel() == 0:
                continue
            for a in self.dims(p):
                self.atoms.lock(a, f"{name} is used through an alias made outside forward")
            self.boundaries.append(
                Boundary("alias", name.rpartition(".")[0], "parameter used through a cached view")
            )

    def set_out(self, t: torch.Tensor, atoms: list[int]) -> None:
        """Give ``t`` its atoms; for in-place results (same object) unify with the old ones."""
        hit = self.layouts.get(id(t))
        if hit is not None and hit[0] is t:
            for a, b in zip(hit[1], atoms, strict=True):
                self.atoms.unify(a, b)
            return
        if self.is_state(t):
            old = self.dims(t)
            for a, b in zip(old, atoms, strict=True):
                self.atoms.unify(a, b)
            return
        self.layouts[id(t)] = (t, list(atoms))

    def has(self, t: torch.Tensor) -> bool:
        hit = self.layouts.get(id(t))
        return hit is not None and hit[0] is t

    def is_state(self, t: torch.Tensor) -> bool:
        """``t`` is one of the model's own parameters or buffers (its twin on a meta trace)."""
        names = self.tensor_names.get(id(t))
        return names is not None and self.traced[names[0]] is t

    def lock_all(self, atoms: list[int], reason: str) -> bool:
        """Lock atoms; True when one of them was still free (worth reporting)."""
        free = False
        A = self.atoms
        for a in atoms:
            if not free and any(not A.is_locked(x) and A.size(x) > 1 for x in A.leaves(a)):
                free = True
            A.lock(a, reason)
        return free

    @property
    def module(self) -> str:
        return self.stack[-1] if self.stack else ""


NOISE_OPS = frozenset(
    {
        "detach",
        "alias",
        "lift_fresh",
        "lift_fresh_copy",
        "_local_scalar_dense",
        "clone",
        "_cuda_version",  # torchvision.ops asks which CUDA it was built with, sometimes
    }
)


SAME_OP = {"_unsafe_view": "view", "_reshape_alias": "view"}


DATA_DEPENDENT_OPS = frozenset(
    {"nms", "nonzero", "masked_select", "unique", "_unique2", "unique_dim", "argwhere"}
)


def data_dependent(name: str, args: tuple) -> bool:
    """Does this call's output length depend on values? Also ``x[mask]`` (``aten.index`` with
    a boolean index: detection heads keep the scores above a threshold that way)."""
    if name in DATA_DEPENDENT_OPS:
        return True
    if name == "index" and len(args) > 1 and isinstance(args[1], (list, tuple)):
        return any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]
        )
    return False


def op_key(name: str) -> str:
    return SAME_OP.get(name, name)


def hf_config(mod: Any) -> Any:
    """The Hugging Face config ``mod`` holds, or None: what ``from_pretrained`` rebuilds the
    model's sizes (and anything derived from them) from."""
    cfg = getattr(mod, "config", None)
    if cfg is None or isinstance(cfg, nn.Module) or not hasattr(cfg, "to_dict"):
        return None
    return cfg


def aligned(names: list[str]) -> list[int]:
    """Positions of the ops that take part in op-by-op comparisons between two runs."""
    return [i for i, n in enumerate(names) if n not in NOISE_OPS]


def scale_follows_head_dim(scale: float | None, head_dim: int) -> str | None:
    """Why attention with this ``scale`` must keep head_dim whole, or None: the default scale
    is 1/sqrt(head_dim), and an explicit one equal to it may be recomputed from the size at run
    time (pruning inside heads would then change it; whole heads stay prunable)."""
    if scale is None:
        return "the default SDPA scale is 1/sqrt(head_dim)"
    if math.isclose(float(scale), 1 / math.sqrt(head_dim), rel_tol=1e-6):
        return "SDPA scale equals 1/sqrt(head_dim)"
    return None
