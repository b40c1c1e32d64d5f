"""Size attributes that must follow the new tensor shapes so the pruned model runs unchanged.

Three sources, most specific first: known torch layers (``Conv*.in_channels/groups``,
``Linear.in_features``, norms, ``MultiheadAttention``); attention modules found by their SDPA
call (``num_heads``, ``num_key_value_heads``, ``head_dim``, ``all_head_size`` by name); and, for
any other module, int attributes that equal the old size of one of its own parameter dims and
for which every such dim agrees on the new size. HF ``config`` objects get the same change when
every layer agrees; otherwise they are left alone and the disagreement is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netslim.core.masks import canonical_name
from netslim.core.names import within
from netslim.core.registry import filed_under
from netslim.structural.graph import hf_config
from netslim.structural.groups import Analysis

HEADS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads", "nheads")
KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head", "kv_heads")
HEAD_DIM = ("head_dim", "attention_head_size", "head_size", "d_head", "dim_head", "d_k")
INNER = ("all_head_size", "inner_dim", "attn_dim", "proj_dim")
_SKIP = (
    "idx", "index", "layer", "vocab", "max_", "position", "seed", "pad", "group", "rep", "eps",
    "expert",
)  # fmt: skip
# words of names of sizes that place things in space rather than count channels or heads
_PLACE = {
    "block", "window", "win", "patch", "kernel", "stride", "grid", "halo", "pool", "height",
    "width",
}  # fmt: skip


@dataclass
class Change:
    """Set ``target.attr`` from ``old`` to ``new``; ``where`` names the module for errors."""

    target: Any
    attr: str
    old: Any
    new: Any
    where: str
    doubtful: bool = False  # the old value also sizes a dim that stays: maybe not this one

    def describe(self) -> str:
        return f"{self.where or '<model>'}.{self.attr}: {self.old} -> {self.new}"


Updater = Callable[[nn.Module, str, "Context"], list[Change]]
_UPDATERS: dict[type, Updater] = {}


def register_updater(*types: type) -> Callable[[Updater], Updater]:
    """Extension point: compute attribute changes for a module type from its new tensors."""
    return filed_under(_UPDATERS, *types)


class Context:
    """What updaters may read: new tensors, new atom sizes, and per-op facts from the trace."""

    def __init__(self, analysis: Analysis, kept: dict[int, int], new: dict[str, torch.Tensor]):
        self.analysis = analysis
        self.graph = analysis.graph
        self.kept = kept
        # keyed by the names that survive masking: ``fc.weight`` is the one updaters read
        self.new = {canonical_name(n): t for n, t in new.items()}
        self.tensors = analysis.tensors
        self.conv_groups: dict[str, int] = {}
        self.norm_groups: dict[str, int] = {}
        self.norm_channels: dict[str, int] = {}
        self.norm_shapes: dict[str, list[int]] = {}
        self._io: dict[str, tuple[list[int], list[int]]] | None = None
        self._sizes: dict[str, set[int]] = {}
        self._helpers: dict[str, list[tuple[str, nn.Module]]] = {}
        self._entered: set[str] = set()
        self._used: set[str] = set()
        self._staying: dict[str, set[int]] | None = None
        # the atoms each module's statistics (mean, var, norms) reduce over, one list per op
        self.stat_atoms: dict[str, list[list[int]]] = {}
        for rec in self.graph.records:
            weight = rec.info.get("weight") if rec.kind == "conv" else None
            if rec.kind == "conv" and rec.info.get("groups") is not None:
                # a masked weight reaches the conv as ``original * mask``, which has no name
                where = weight.rpartition(".")[0] if weight else rec.module
                self.conv_groups[where] = rec.info["groups"]
            if rec.info.get("stat") == "group_norm":
                self.norm_groups[rec.module] = rec.info["groups"]
                self.norm_channels[rec.module] = rec.ins[0][1]
            if rec.info.get("stat") == "layer_norm" and rec.ins:
                self.norm_shapes[rec.module] = [rec.ins[0][d] for d in rec.info["dims"]]
            if rec.kind == "stat" and rec.ins and rec.info.get("dims") is not None:
                reduced = [rec.ins[0][d] for d in rec.info["dims"]]
                self.stat_atoms.setdefault(rec.module, []).append(reduced)

    def size(self, atom: int) -> int:
        return self.graph.atoms.new_size(atom, self.kept)

    def module_io(self, where: str) -> tuple[list[int], list[int], set[int]]:
        """The dims of what ``where``'s first op read and what its last op wrote (the
        module's input and output widths), and the sizes its own ops were given (view,
        split): an int among those means what that op does with it, not a width."""
        if self._io is None:
            self._io = {}
            for rec in self.graph.eval_records:
                for w in rec.stack:
                    first = self._io[w][0] if w in self._io else (rec.ins[0] if rec.ins else [])
                    self._io[w] = (first, rec.outs[0] if rec.outs else [])
                sizes = [c for c, _ in rec.info.get("split") or ()] + list(
                    rec.info.get("ints") or ()
                )
                self._sizes.setdefault(rec.module, set()).update(sizes)
        ins, outs = self._io.get(where, ([], []))
        return ins, outs, self._sizes.get(where, set())

    def helpers(self, where: str) -> list[tuple[str, nn.Module]]:
        """Submodules of ``where`` whose parameters the forward used without entering them:
        the module calls their methods (timm's ``self.rel_pos.get_bias()``), so their ops ran
        as ``where``'s own and their ints (``num_heads``) are sizes those ops were given."""
        if not self._helpers:  # what every module's list is made from, once
            self._entered = {w for rec in self.graph.records for w in rec.stack}
            self._used = set(self.graph.used)
        if where not in self._helpers:
            prefix = f"{where}." if where else ""
            self._helpers[where] = [
                (prefix + name, sub)
                for name, sub in self.graph.model.get_submodule(where).named_modules()
                if name
                and prefix + name not in self._entered
                and any(f"{prefix}{name}.{t}" in self._used for t, _ in sub.named_parameters())
            ]
        return self._helpers[where]

    def staying(self, where: str) -> set[int]:
        """Sizes the ops run inside ``where`` pass for dims that keep their size (HaloAttn's
        ``block_size`` of 8 in the reshape that also takes 8 heads): an int attribute of that
        value may be either, so a spatial name keeps it (:func:`_follow_int`) and its change is
        doubtful (``apply_masks`` retries without it when the check fails)."""
        if self._staying is None:
            self._staying = {}
            for rec in self.graph.records:
                for c, atom in _size_pairs(rec):
                    if c >= 2 and c == self.old_size(atom) == self.size(atom):
                        for w in rec.stack:
                            self._staying.setdefault(w, set()).add(c)
        return self._staying.get(where, set())

    def old_size(self, atom: int) -> int:
        return self.graph.atoms.size(atom)

    def tensor(self, module: str, leaf: str) -> torch.Tensor | None:
        name = f"{module}.{leaf}" if module else leaf
        if name in self.new:
            return self.new[name]
        if name in self.tensors:
            return self.tensors[name]
        return self._split_original(module, leaf)

    def _split_original(self, module: str, leaf: str) -> torch.Tensor | None:
        """A weight made from several tensors stands for the one shaped like it: weight_norm's
        ``v`` (``parametrizations.weight.original1``, or ``weight_v`` for the legacy hook)."""
        weight = getattr(self.graph.model.get_submodule(module), leaf, None) if module else None
        if not isinstance(weight, torch.Tensor):
            return None
        m, w = re.escape(module), re.escape(leaf)
        parts = re.compile(rf"{m}\.(parametrizations\.{w}\.original\d+|{w}_[a-z]+)")
        for name, t in self.tensors.items():
            if parts.fullmatch(name) and t.shape == weight.shape:
                return self.new.get(name, t)
        return None


def _set(mod: nn.Module, where: str, **values: Any) -> list[Change]:
    out = []
    for attr, new in values.items():
        old = getattr(mod, attr, None)
        if old is not None and old != new:
            out.append(Change(mod, attr, old, new, where))
    return out


@register_updater(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d)  # fmt: skip
def _conv(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    w = ctx.tensor(where, "weight")
    g = ctx.conv_groups.get(where)
    groups = ctx.size(g) if g is not None else mod.groups
    if mod.transposed:
        return _set(
            mod, where, groups=groups, in_channels=w.shape[0], out_channels=w.shape[1] * groups
        )
    return _set(mod, where, groups=groups, out_channels=w.shape[0], in_channels=w.shape[1] * groups)


@register_updater(nn.Linear)
def _linear(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    w = ctx.tensor(where, "weight")
    return _set(mod, where, in_features=w.shape[1], out_features=w.shape[0])


@register_updater(nn.Bilinear)
def _bilinear(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    w = ctx.tensor(where, "weight")
    return _set(
        mod, where, out_features=w.shape[0], in1_features=w.shape[1], in2_features=w.shape[2]
    )


def _norm_features(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    for leaf in ("weight", "running_mean", "bias"):
        t = ctx.tensor(where, leaf)
        if t is not None:
            return _set(mod, where, num_features=t.shape[0])
    return []


for _t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
           nn.InstanceNorm2d, nn.InstanceNorm3d):  # fmt: skip
    register_updater(_t)(_norm_features)


@register_updater(nn.LayerNorm, nn.RMSNorm)
def _layer_norm(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    w = ctx.tensor(where, "weight")
    if w is not None:
        shape = tuple(w.shape)
    elif where in ctx.norm_shapes:
        shape = tuple(ctx.size(a) for a in ctx.norm_shapes[where])
    else:
        return []
    return _set(mod, where, normalized_shape=shape)


@register_updater(nn.GroupNorm)
def _group_norm(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    g = ctx.norm_groups.get(where)
    if g is None:
        return []
    return _set(mod, where, num_groups=ctx.size(g), num_channels=ctx.size(ctx.norm_channels[where]))


@register_updater(nn.Embedding)
def _embedding(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    w = ctx.tensor(where, "weight")
    return _set(mod, where, num_embeddings=w.shape[0], embedding_dim=w.shape[1])


@register_updater(nn.PReLU)
def _prelu(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    return _set(mod, where, num_parameters=ctx.tensor(where, "weight").numel())


@register_updater(nn.RNNBase)
def _rnn(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    """nn.RNN/GRU/LSTM: sizes from layer 0's weights (all gates stacked on dim 0)."""
    w_ih = ctx.tensor(where, "weight_ih_l0")
    hidden = w_ih.shape[0] // {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)
    out = _set(mod, where, input_size=w_ih.shape[1], hidden_size=hidden)
    w_hr = ctx.tensor(where, "weight_hr_l0")
    return out + (_set(mod, where, proj_size=w_hr.shape[0]) if w_hr is not None else [])


@register_updater(nn.MultiheadAttention)
def _mha(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    w = ctx.tensor(where, "out_proj.weight")
    embed = w.shape[0]
    names = (f"{where}.out_proj.weight", f"{where}.out_proj.parametrizations.weight.original")
    old_inner = next(ctx.graph.tensors[n] for n in names if n in ctx.graph.tensors)
    layout = ctx.graph.layouts.get(id(old_inner))
    heads = mod.num_heads
    if layout is not None:
        d = ctx.graph.atoms.decomp(layout[1][1])
        if d and d[0] == "prod" and len(d[1]) == 2 and ctx.old_size(d[1][0]) == mod.num_heads:
            heads = ctx.size(d[1][0])
    out = _set(mod, where, embed_dim=embed, num_heads=heads, head_dim=embed // heads)
    if mod._qkv_same_embed_dim:
        return out + _set(mod, where, kdim=embed, vdim=embed)
    k, v = ctx.tensor(where, "k_proj_weight"), ctx.tensor(where, "v_proj_weight")
    return out + _set(mod, where, kdim=k.shape[1], vdim=v.shape[1])


@register_updater(nn.Transformer)
def _transformer(mod: nn.Module, where: str, ctx: Context) -> list[Change]:
    """nn.Transformer checks its inputs' width against ``d_model``: the residual width its
    attention layers now write."""
    for name, sub in mod.named_modules():
        if isinstance(sub, nn.MultiheadAttention):
            w = ctx.tensor(".".join(s for s in (where, name) if s), "out_proj.weight")
            return _set(mod, where, d_model=w.shape[0], nhead=sub.num_heads)
    return []


def _attention_facts(ctx: Context) -> dict[str, list[Change]]:
    """Head counts for modules that call SDPA, set by attribute name."""
    out: dict[str, list[Change]] = {}
    model = ctx.graph.model
    for rec in ctx.graph.records:
        if rec.kind != "sdpa":
            continue
        info = rec.info
        q, kv, hd = info["q_heads"], info["kv_heads"], info["head_dim"]
        facts = {
            HEADS: (ctx.old_size(q), ctx.size(q)),
            KV_HEADS: (ctx.old_size(kv), ctx.size(kv)),
            HEAD_DIM: (ctx.old_size(hd), ctx.size(hd)),
            INNER: (ctx.old_size(q) * ctx.old_size(hd), ctx.size(q) * ctx.size(hd)),
        }
        for where in reversed(rec.stack):
            mod = model.get_submodule(where)
            cfg = hf_config(mod)
            names = [n for names in facts for n in names if isinstance(getattr(mod, n, None), int)]
            if not names and cfg is None:
                continue
            changes = out.setdefault(where, [])
            for attr_names, (old, new) in facts.items():
                for n in attr_names:
                    if getattr(mod, n, None) == old and old != new:
                        changes.append(Change(mod, n, old, new, where))
                    if cfg is not None and getattr(cfg, n, None) == old and old != new:
                        changes.append(Change(cfg, n, old, new, where))
            break
    return out


def _reshape_constants(ctx: Context, taken: dict[str, list[Change]]) -> dict[str, list[Change]]:
    """Sizes passed to view/reshape/expand/split that change: the module that issued the op
    holds them as int attributes (``self.num_heads``, a CSP block's ``self.c`` in
    ``x.split((self.c, self.c))``, even when the traced path called ``chunk``); update those
    whose value is the old size."""
    out: dict[str, list[Change]] = {}
    for rec in ctx.graph.records:
        pairs = _size_pairs(rec)
        listed = rec.info.get("split") is not None  # sizes of parts, not a shape
        if pairs and (not listed or (len(pairs) > 1 and rec.name != "split")):
            sizes, atoms = [c for c, _ in pairs], [a for _, a in pairs]
            _shape_tuples(ctx, rec, sizes, atoms, taken, out)  # inception_next's split_indexes
        for c, atom in pairs:
            if c < 2 or c != ctx.old_size(atom):
                continue
            new = ctx.size(atom)
            if new != c and not _follow_int(ctx, rec, c, new, taken, out) and rec.name == "split":
                _split_whole(ctx, rec, pairs, taken, out)
    return out


def _size_pairs(rec: Any) -> list[tuple[int, int]]:
    """``(size, atom)`` for each size a view/reshape/expand or split was given (``repeat``
    takes multiples, not sizes)."""
    pairs = rec.info.get("split")
    if pairs is not None:
        return list(pairs)
    ints = rec.info.get("ints")
    if rec.kind != "reshape" or not ints or not rec.outs or rec.name == "repeat":
        return []
    if len(ints) != len(rec.outs[0]):
        return []
    return list(zip(ints, rec.outs[0], strict=True))


def _split_whole(
    ctx: Context,
    rec: Any,
    pairs: list[tuple[int, int]],
    taken: dict[str, list[Change]],
    out: dict[str, list[Change]],
) -> None:
    """``x.split(self.in_channels // self.num_paths)`` (timm's SelectiveKernel): no attribute
    holds the part size, so the one that holds the whole, in the module that split, follows."""
    old = sum(ctx.old_size(p) for _, p in pairs)
    new = sum(ctx.size(p) for _, p in pairs)
    _follow_int(ctx, rec, old, new, taken, out, climb=False)


def _follow_int(
    ctx: Context,
    rec: Any,
    old: int,
    new: int,
    taken: dict[str, list[Change]],
    out: dict[str, list[Change]],
    climb: bool = True,
) -> bool:
    """Set the int attributes equal to ``old`` in the innermost module of ``rec``'s stack that
    has any to ``new`` (with ``climb=False``, only the module that ran the op); True when one
    was found. The search stops at a module with a Hugging Face config: its sizes come from the
    config (``_attention_facts`` and ``_config_changes`` handle those), and an ancestor's equal
    int (a causal LM's ``num_experts`` beside 4 heads) is another quantity."""
    model = ctx.graph.model
    for where in reversed(rec.stack if climb else rec.stack[-1:]):
        mod = model.get_submodule(where)
        own = _int_attrs(mod, old)
        doubtful = old in ctx.staying(where)  # the value also sizes a dim that stays
        if doubtful:
            own = [a for a in own if not _PLACE & set(a.lower().split("_"))]
        # the same names in the helpers it calls (or, when it holds none, theirs alone: the
        # shared table a model's own forward reads)
        theirs = [
            (at, m, [n for n in _int_attrs(m, old) if not own or n in own])
            for at, m in ctx.helpers(where)
        ]
        if not own and not any(names for _, _, names in theirs):
            if hf_config(mod) is not None:
                return False
            continue
        for at, m, names in [(where, mod, own), *theirs]:
            done = {(id(ch.target), ch.attr) for ch in taken.get(at, []) + out.get(at, [])}
            for name in names:
                if (id(m), name) not in done:
                    out.setdefault(at, []).append(Change(m, name, old, new, at, doubtful))
        return True
    return False


def _int_attrs(mod: nn.Module, value: int) -> list[str]:
    """Names of ``mod``'s public int attributes equal to ``value`` (sizes, not flags/ids)."""
    return [
        a for a, v in vars(mod).items()
        if type(v) is int and v == value and not a.startswith("_")
        and not any(x in a.lower() for x in _SKIP)
    ]  # fmt: skip


def _shape_tuples(
    ctx: Context,
    rec: Any,
    ints: list[int],
    outs: list[int],
    taken: dict[str, list[Change]],
    out: dict[str, list[Change]],
) -> None:
    """A whole shape kept as a tuple attribute (timm's ``Scale``: ``x * w.view(self.shape)``;
    the sizes of a split, ``x.split(self.split_indexes)``): replace the tuple when it equals the
    op's size list exactly (a weaker match could rewrite an unrelated tuple such as a kernel
    size)."""
    new = [
        ctx.size(a) if c >= 2 and c == ctx.old_size(a) else c
        for c, a in zip(ints, outs, strict=True)
    ]
    if new == list(ints):
        return
    model = ctx.graph.model
    for where in reversed(rec.stack):
        mod = model.get_submodule(where)
        if isinstance(mod, nn.Unflatten):  # its sizes are the op's sizes from ``dim`` on
            _unflatten(mod, where, ints, new, out)
            return
        found = False
        for at, m in [(where, mod), *ctx.helpers(where)]:
            hits = [
                a for a, v in vars(m).items()
                if type(v) in (tuple, list) and not a.startswith("_") and list(v) == list(ints)
                and all(type(x) is int for x in v)
            ]  # fmt: skip
            done = {(id(ch.target), ch.attr) for ch in taken.get(at, []) + out.get(at, [])}
            for a in hits:
                found = True
                if (id(m), a) not in done:
                    old = getattr(m, a)
                    out.setdefault(at, []).append(Change(m, a, old, type(old)(new), at))
        if found:
            return


def _unflatten(
    mod: nn.Unflatten, where: str, ints: list[int], new: list[int], out: dict[str, list[Change]]
) -> None:
    old = tuple(mod.unflattened_size)
    start = mod.dim if mod.dim >= 0 else mod.dim + len(ints) - len(old) + 1
    if tuple(ints[start : start + len(old)]) == old:
        size = tuple(new[start : start + len(old)])
        if size != old:
            out.setdefault(where, []).append(Change(mod, "unflattened_size", old, size, where))


def _own_tensors(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``m``'s own parameters and buffers (timm's BlurPool2d filters with a buffer and keeps
    ``self.channels`` for the conv's groups) under the names that survive masking: a masked
    ``weight`` lives in ``m.parametrizations.weight.original``, not among ``m``'s direct
    parameters."""
    out = list(m.named_parameters(recurse=False))
    out += [(n, b) for n, b in m.named_buffers(recurse=False) if b is not None]
    for leaf, plist in getattr(m, "parametrizations", {}).items():
        original = getattr(plist, "original", None)
        if isinstance(original, torch.Tensor):
            out.append((leaf, original))
    return out


def _generic(mod: nn.Module, where: str, ctx: Context, taken: set[str]) -> list[Change]:
    """Int attributes equal to the old size of this module's own parameter or buffer dims."""
    dims: list[tuple[int, int]] = []  # (old, new) per param dim of the module and its children
    for prefix, m in [("", mod), *mod.named_children()]:  # one level down: cheap on a big root
        for leaf, p in _own_tensors(m):
            new = ctx.new.get(".".join(s for s in (where, prefix, leaf) if s))
            if new is not None:
                dims.extend(zip(p.shape, new.shape, strict=True))
    if not dims:
        return []
    out = []
    for attr, v in vars(mod).items():
        if attr.startswith("_") or attr in taken or type(v) is not int or v < 2:
            continue
        if any(s in attr.lower() for s in _SKIP):
            continue
        news = {n for o, n in dims if o == v}
        if len(news) > 1:  # an input and an output width of the same old size (diffusers'
            # Upsample2D asserts its input has ``self.channels``): the module's input tells,
            # or its output for an ``out_*`` attribute, unless one of its ops takes the int
            # as a size (MobileViT's qkv.split([1, embed_dim, embed_dim]))
            ins, outs, sizes = ctx.module_io(where)
            side = outs if attr.lower().startswith("out") else ins
            news &= {ctx.size(a) for a in side if ctx.old_size(a) == v} if v not in sizes else set()
        elif news and v in ctx.module_io(where)[2] and v not in news:
            # a size one of its ops takes (Hiera's ``reshape(..., self.heads, self.head_dim)``)
            # that merely equals a weight's width (head_dim == dim with one head): the op's
            # own dim decides (``_reshape_constants``), not the coincidence
            continue
        if len(news) == 1 and v not in news:
            out.append(Change(mod, attr, v, news.pop(), where))
    return out


def _shape_attrs(mod: nn.Module, where: str, ctx: Context, taken: set[str]) -> list[Change]:
    """Tuple attributes equal to the old shape of one of the module's own tensors or of the
    dims its statistics reduce over: a hand-written norm's ``normalized_shape`` (timm's
    ``RmsNorm``, with or without a weight), which ``F.rms_norm`` checks against the weight."""
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for leaf, p in _own_tensors(mod):
        new = ctx.new.get(f"{where}.{leaf}" if where else leaf)
        if new is not None:
            shapes.append((tuple(p.shape), tuple(new.shape)))
    for atoms in ctx.stat_atoms.get(where, []):
        shapes.append((tuple(map(ctx.old_size, atoms)), tuple(map(ctx.size, atoms))))
    out = []
    for attr, v in vars(mod).items():
        if attr.startswith("_") or attr in taken or type(v) not in (tuple, list) or not v:
            continue
        if not all(type(i) is int for i in v) or any(s in attr.lower() for s in _SKIP):
            continue
        news = {n for o, n in shapes if o == tuple(v) and n != o}
        if len(news) == 1:
            out.append(Change(mod, attr, v, type(v)(news.pop()), where))
    return out


def plan_changes(analysis: Analysis, kept: dict[int, int], new: dict[str, torch.Tensor]):
    """All attribute changes, plus notes on config values that could not be updated."""
    ctx = Context(analysis, kept, new)
    model = analysis.graph.model
    changed_modules = {n.rpartition(".")[0] for n in ctx.new}
    changes: list[Change] = []
    by_module = _attention_facts(ctx)
    for where, extra in _reshape_constants(ctx, by_module).items():
        by_module.setdefault(where, []).extend(extra)
    for where, mod in model.named_modules():
        upd = next((_UPDATERS[c] for c in type(mod).__mro__ if c in _UPDATERS), None)
        if upd is not None:  # known layers: their updater is the whole truth
            inside = any(within(m, where) for m in changed_modules)
            if inside or any(
                where in facts for facts in (ctx.conv_groups, ctx.norm_shapes, ctx.norm_groups)
            ):
                changes += upd(mod, where, ctx)
            continue
        mine = list(by_module.get(where, []))
        if any(within(m, where) for m in changed_modules):
            mine += _generic(mod, where, ctx, {c.attr for c in mine})
        if where in ctx.stat_atoms or where in changed_modules:
            mine += _shape_attrs(mod, where, ctx, {c.attr for c in mine})
        changes += mine
    changes, cfg_changes, notes = _config_changes(model, changes)
    return changes + cfg_changes, notes


def _config_changes(
    model: nn.Module, changes: list[Change]
) -> tuple[list[Change], list[Change], list[str]]:
    """Module changes, and config changes applied only where every layer agrees.

    A config is shared by all layers; when layers end up with different sizes the config keeps
    its old value (the modules carry the truth) and a note says so."""
    alias = {n: HEADS for n in HEADS} | {n: KV_HEADS for n in KV_HEADS}
    alias |= {n: HEAD_DIM for n in HEAD_DIM}
    proposals: dict[tuple[int, str], dict[Any, list[str]]] = {}
    configs: dict[int, Any] = {}
    direct = [c for c in changes if isinstance(c.target, nn.Module)]
    for c in changes:
        if not isinstance(c.target, nn.Module):
            configs[id(c.target)] = c.target
            proposals.setdefault((id(c.target), c.attr), {}).setdefault(c.new, []).append(c.where)
            continue
        cfg = hf_config(c.target)
        if cfg is None:
            continue
        configs[id(cfg)] = cfg
        field = next((n for n in _EXPERT_FIELDS.get(c.attr, ()) if hasattr(cfg, n)), None)
        for name in (
            alias.get(c.attr, (c.attr,)) + _cfg_aliases(c.attr) + ((field,) if field else ())
        ):
            if getattr(cfg, name, None) == c.old:
                proposals.setdefault((id(cfg), name), {}).setdefault(c.new, []).append(c.where)
    out, notes = [], []
    for (cid, name), news in proposals.items():
        cfg = configs[cid]
        if len(news) == 1:
            new = next(iter(news))
            out.append(Change(cfg, name, getattr(cfg, name), new, "config"))
        else:
            notes.append(
                f"config.{name} left at {getattr(cfg, name)}: layers differ {sorted(news)}"
            )
    return direct, out, notes


# Sizes transformers' mixture-of-experts modules hold under other names than their config's
# (Mixtral's ``MixtralExperts.hidden_dim``; Qwen2-MoE's shared expert, an MLP whose
# ``intermediate_size`` is the config's ``shared_expert_intermediate_size``): the config field
# each may stand for, the first the config has (it is changed only if it holds the old value).
_EXPERT_FIELDS = {
    "hidden_dim": ("hidden_size",),
    "intermediate_dim": ("moe_intermediate_size", "intermediate_size"),
    "intermediate_size": ("shared_expert_intermediate_size",),
}


def _cfg_aliases(attr: str) -> tuple[str, ...]:
    if attr in HEADS:
        return ("num_attention_heads", "num_heads", "n_head")
    if attr in KV_HEADS:
        return ("num_key_value_heads",)
    if attr in HEAD_DIM:
        return ("head_dim",)
    return ()
