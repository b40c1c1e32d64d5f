"""Channel algebra: abstract index spaces ("atoms") joined by union-find and refined into parts.

Every traced tensor dim is one atom. Two dims that must keep the same indices are *unified*.
An atom can be *refined* into a product (``768 -> heads 12 x head_dim 64``, row-major) or a
concatenation (``cat`` / ``split`` / ``slice``) of smaller atoms; refinement lives on the
union-find root so every dim unified with it sees it. Two different refinements of the same
atom are merged into their common refinement, or, when none exists, the atoms are locked:
the algebra never guesses. The prunable units are the unrefined, unlocked leaves.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

PROD = "prod"
CAT = "cat"


class AlgebraConflict(Exception):
    """Two facts about the same index space cannot both hold; the caller locks the atoms."""


class Atoms:
    """Union-find over index spaces with product/concatenation refinement and locks."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._lock: dict[int, str] = {}
        self._stat: list[int] = []
        self._decomp: dict[int, tuple[str, list[int]]] = {}

    # -- creation and lookup -------------------------------------------------------------
    def new(self, size: int, lock: str | None = None) -> int:
        a = len(self._parent)
        self._parent.append(a)
        self._size.append(int(size))
        if lock is not None:
            self._lock[a] = lock
        return a

    def find(self, a: int) -> int:
        parent = self._parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def size(self, a: int) -> int:
        return self._size[self.find(a)]

    def decomp(self, a: int) -> tuple[str, list[int]] | None:
        return self._decomp.get(self.find(a))

    def is_locked(self, a: int) -> bool:
        return self.find(a) in self._lock

    def lock_reason(self, a: int) -> str | None:
        return self._lock.get(self.find(a))

    def stat_leaves(self) -> set[int]:
        """Leaves reduced by a width statistic, resolved after all refinement is known."""
        out: set[int] = set()
        for a in self._stat:
            out.update(self.leaves(a))
        return out

    # -- facts ---------------------------------------------------------------------------
    def lock(self, a: int, reason: str) -> None:
        """Keep every index of ``a`` (and of all its parts, now and after later refinement)."""
        stack = [a]
        while stack:
            r = self.find(stack.pop())
            if r in self._lock:
                continue
            self._lock[r] = reason
            d = self._decomp.get(r)
            if d:
                stack.extend(d[1])

    def mark_stat(self, a: int) -> None:
        """``a`` is reduced by a width statistic (mean/var/norm): exact only over kept indices."""
        self._stat.append(a)

    def unify(self, a: int, b: int, _depth: int = 0) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] != self._size[rb]:
            raise AlgebraConflict(f"size {self._size[ra]} != {self._size[rb]}")
        if _depth > 64:
            raise AlgebraConflict("refinement too deep")
        self._parent[rb] = ra
        da, db = self._decomp.pop(ra, None), self._decomp.pop(rb, None)
        locked = self._lock.pop(rb, None) or self._lock.get(ra)
        if da is not None:
            self._decomp[ra] = da
        if db is not None:
            if da is None:
                self._decomp[ra] = db
            else:
                self._merge(ra, db, _depth + 1)
        if locked is not None:
            self._lock.pop(ra, None)
            self.lock(ra, locked)

    def refine(self, a: int, kind: str, parts: list[int], _depth: int = 0) -> None:
        """State that ``a`` is the product (row-major) or concatenation of ``parts``."""
        sizes = [self.size(p) for p in parts]
        total = 1
        if kind == PROD:
            for s in sizes:
                total *= s
            parts = [p for p, s in zip(parts, sizes, strict=True) if s != 1]
        else:
            total = sum(sizes)
            parts = [p for p, s in zip(parts, sizes, strict=True) if s != 0]
        if total != self.size(a):
            raise AlgebraConflict(f"{kind} of {sizes} does not cover size {self.size(a)}")
        if not parts:
            return
        if len(parts) == 1:
            self.unify(a, parts[0], _depth + 1)
            return
        r = self.find(a)
        if any(self.find(p) == r for p in parts):
            raise AlgebraConflict("atom refined into itself")
        existing = self._decomp.get(r)
        if existing is None:
            self._decomp[r] = (kind, list(parts))
            if r in self._lock:
                for p in parts:
                    self.lock(p, self._lock[r])
        else:
            self._merge(r, (kind, list(parts)), _depth + 1)

    # -- common refinement ---------------------------------------------------------------
    def _merge(self, r: int, other: tuple[str, list[int]], depth: int) -> None:
        if depth > 64:
            raise AlgebraConflict("refinement too deep")
        kind, parts = self._decomp[r]
        okind, oparts = other
        if kind == okind:
            self._align(kind, list(parts), list(oparts), depth)
        elif kind == PROD:
            self._prod_vs_cat(parts, oparts, depth)
        else:
            self._prod_vs_cat(oparts, parts, depth)
        if r in self._lock:
            self.lock(r, self._lock[r])

    def _align(self, kind: str, xs: list[int], ys: list[int], depth: int) -> None:
        """Walk two refinements of one space from the major end, splitting the larger part."""
        i = j = 0
        x, y = xs[0], ys[0]
        while True:
            sx, sy = self.size(x), self.size(y)
            if sx == sy:
                self.unify(x, y, depth + 1)
                i, j = i + 1, j + 1
                if i == len(xs) or j == len(ys):
                    if i != len(xs) or j != len(ys):
                        raise AlgebraConflict("refinements of different length")
                    return
                x, y = xs[i], ys[j]
                continue
            big, small = (x, y) if sx > sy else (y, x)
            sb, ss = max(sx, sy), min(sx, sy)
            if kind == PROD:
                if sb % ss:
                    raise AlgebraConflict(f"factor {ss} does not divide {sb}")
                rest = self.new(sb // ss)
            else:
                rest = self.new(sb - ss)
            self.refine(big, kind, [small, rest], depth + 1)
            if sx > sy:
                x = rest
                j += 1
                if j == len(ys):
                    raise AlgebraConflict("refinements do not cover the same space")
                y = ys[j]
            else:
                y = rest
                i += 1
                if i == len(xs):
                    raise AlgebraConflict("refinements do not cover the same space")
                x = xs[i]

    def _prod_vs_cat(self, factors: list[int], pieces: list[int], depth: int) -> None:
        """``f0 x rest == cat(pieces)`` holds when every piece is a whole number of ``rest``
        blocks; then ``f0`` is a concatenation and each piece is ``(its slice of f0) x rest``.
        This is what makes a channel shuffle (cat, then view into groups) expressible."""
        total = 1
        for f in factors:
            total *= self.size(f)
        stride = total // self.size(factors[0])
        if any(self.size(p) % stride for p in pieces):
            raise AlgebraConflict("concatenation cuts across a product factor")
        if len(factors) == 2:
            rest = factors[1]
        else:
            rest = self.new(stride)
            self.refine(rest, PROD, list(factors[1:]), depth + 1)
        slices = [self.new(self.size(p) // stride) for p in pieces]
        self.refine(factors[0], CAT, slices, depth + 1)
        for p, s in zip(pieces, slices, strict=True):
            self.refine(p, PROD, [s, rest], depth + 1)

    # -- reading the result --------------------------------------------------------------
    def leaves(self, a: int) -> list[int]:
        r = self.find(a)
        d = self._decomp.get(r)
        if d is None:
            return [r]
        out: list[int] = []
        for p in d[1]:
            out.extend(self.leaves(p))
        return out

    def index_map(self, a: int) -> dict[int, torch.Tensor]:
        """For each leaf under ``a``: the leaf index at every position of ``a`` (-1: absent)."""
        r = self.find(a)
        n = self._size[r]
        d = self._decomp.get(r)
        if d is None:
            return {r: torch.arange(n)}
        kind, parts = d
        out: dict[int, torch.Tensor] = {}
        if kind == CAT:
            off = 0
            for p in parts:
                sp = self.size(p)
                for leaf, idx in self.index_map(p).items():
                    cur = out.setdefault(leaf, torch.full((n,), -1, dtype=torch.long))
                    cur[off : off + sp] = idx
                off += sp
            return out
        pos = torch.arange(n)
        stride = n
        for p in parts:
            sp = self.size(p)
            stride //= sp
            local = (pos // stride) % sp
            for leaf, idx in self.index_map(p).items():
                sel = idx[local]
                prev = out.get(leaf)
                out[leaf] = sel if prev is None else torch.where(prev >= 0, prev, sel)
        return out

    def kept_positions(self, a: int, keep: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """Positions of ``a`` that survive when each leaf keeps ``keep[leaf]`` (bool masks);
        ``None`` when nothing under ``a`` changes."""
        maps = self.index_map(a)
        touched = [leaf for leaf in maps if leaf in keep]
        if not touched:
            return None
        alive = torch.ones(self.size(a), dtype=torch.bool)
        for leaf in touched:
            idx = maps[leaf]
            present = idx >= 0
            alive &= ~present | keep[leaf][idx.clamp(min=0)]
        return alive.nonzero().flatten()

    def new_size(self, a: int, kept: dict[int, int]) -> int:
        """Size of ``a`` after pruning, given the kept count of each pruned leaf."""
        r = self.find(a)
        d = self._decomp.get(r)
        if d is None:
            return kept.get(r, self._size[r])
        kind, parts = d
        if kind == CAT:
            return sum(self.new_size(p, kept) for p in parts)
        out = 1
        for p in parts:
            out *= self.new_size(p, kept)
        return out

    def roots(self, atoms: Iterable[int]) -> set[int]:
        return {self.find(a) for a in atoms}
