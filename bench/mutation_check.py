"""Mutation check: does breaking one piece of the engine make a test fail? Writes docs/testing.md.

    .venv/bin/python bench/mutation_check.py [--only a,d] [--no-baseline]

Each mutant is a hand-made patch (an exact text replacement that must match once) applied to a
temporary copy of the package and its tests; the named test files then run against that copy
(``pytest -x``). A mutant is *killed* when pytest reports a failing test (exit code 1); a
mutant whose tests still pass, or that breaks collection/import instead (exit code 2+), is a
finding. The unmutated copy runs the same tests first (the baseline must pass), so a kill is
the patch's doing, not a test that was already red. The issue's bar (#21): mutants (a) a
coupling rule for residual adds, (b) the attribute fix-up for attention heads, (c) the
save/load replay and (d) the mask application in unstructured pruning are all killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "testing.md"
START, END = "<!-- mutation_check: start -->", "<!-- mutation_check: end -->"


@dataclass(frozen=True)
class Mutant:
    key: str
    what: str
    path: str  # inside the package copy
    old: str
    new: str
    tests: tuple[str, ...]
    also: tuple[tuple[str, str, str], ...] = ()  # more (path, old, new) patches of one mutant

    def patches(self) -> tuple[tuple[str, str, str], ...]:
        return ((self.path, self.old, self.new), *self.also)

    def misfits(self, root: Path) -> list[str]:
        """The patches that no longer match exactly once under ``root`` (the code moved on):
        a mutant that cannot be applied checks nothing (tests/test_mutation_check.py)."""
        counts = [((root / p).read_text().count(old), p) for p, old, _ in self.patches()]
        return [f"{p}: matches {n} times" for n, p in counts if n != 1]


MUTANTS = (
    Mutant(
        "a",
        "residual add: operands of an elementwise add are no longer coupled (unify skipped)",
        "netslim/structural/rules/elementwise.py",
        "            elif s != 1:\n                try:\n                    ctx.unify(cur, a)\n",
        "            elif s != 1 and not ctx.name.startswith('add'):\n"
        "                try:\n                    ctx.unify(cur, a)\n",
        ("tests/test_structural_layers.py::test_residual_add_and_squeeze_excitation",),
    ),
    Mutant(
        "a2",
        "residual add: as a, run against the hand-sliced oracle alone (shares no engine code)",
        "netslim/structural/rules/elementwise.py",
        "            elif s != 1:\n                try:\n                    ctx.unify(cur, a)\n",
        "            elif s != 1 and not ctx.name.startswith('add'):\n"
        "                try:\n                    ctx.unify(cur, a)\n",
        ("tests/test_oracle.py",),
    ),
    Mutant(
        "b1",
        "attention heads: nn.MultiheadAttention keeps its old num_heads after head pruning",
        "netslim/structural/attrs.py",
        "            heads = ctx.size(d[1][0])\n",
        "            heads = heads\n",
        ("tests/test_structural_layers.py::test_embedding_norms_mha_tied_weights",),
    ),
    Mutant(
        "b2",
        "attention heads: a module's own head-count int (ViT's self.heads) is not followed",
        "netslim/structural/attrs.py",
        "                    out.setdefault(at, []).append(Change(m, name, old, new, at, doubtful))\n",
        "                    pass\n",
        ("tests/test_structural_layers.py::test_vit_style_attention_heads",),
    ),
    Mutant(
        "b3",
        "attention heads: SDPA callers' head attributes (HF num_heads, head_dim) are not set",
        "netslim/structural/attrs.py",
        "                    if getattr(mod, n, None) == old and old != new:\n",
        "                    if False:\n",
        (
            "tests/test_structural_trace.py::test_meta_trace_finds_the_groups_the_real_trace_finds",
            "tests/test_structural_layers.py::test_sdpa_attention_head_facts_follow_in_hf_bert_and_llama",
        ),
    ),
    Mutant(
        "b4",
        "attention heads: b1 and b3 together (both set nn.MultiheadAttention's num_heads)",
        "netslim/structural/attrs.py",
        "            heads = ctx.size(d[1][0])\n",
        "            heads = heads\n",
        ("tests/test_structural_layers.py::test_embedding_norms_mha_tied_weights",),
        (
            (
                "netslim/structural/attrs.py",
                "                    if getattr(mod, n, None) == old and old != new:\n",
                "                    if False:\n",
            ),
        ),
    ),
    Mutant(
        "c1",
        "save/load replay: history steps are not replayed",
        "netslim/io/replay.py",
        '        replayer_for(step["kind"])(model, step)\n',
        '        replayer_for(step["kind"])\n',
        ("tests/test_save_load_matrix.py", "tests/test_io.py"),
    ),
    Mutant(
        "c2",
        "save/load replay: only the first history step is replayed",
        "netslim/io/replay.py",
        "    for index, step in enumerate(history):\n",
        "    for index, step in enumerate(history[:1]):\n",
        ("tests/test_save_load_matrix.py", "tests/test_io.py", "tests/test_layers.py"),
    ),
    Mutant(
        "d",
        "unstructured masks: the weight parametrization no longer multiplies by the mask",
        "netslim/core/masks.py",
        "        return X * self.mask\n",
        "        return X\n",
        ("tests/test_unstructured.py",),
    ),
)


def _copy(dst: Path) -> None:
    shutil.copytree(ROOT / "netslim", dst / "netslim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", dst / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def _pytest(
    where: Path, tests: tuple[str, ...], stop: bool, timeout: int
) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(where), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    if stop:
        cmd.insert(4, "-x")
    t0 = time.monotonic()
    try:
        run = subprocess.run(
            cmd, cwd=where, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return 124, "timed out", time.monotonic() - t0
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    failed = next((ln for ln in lines if ln.startswith(("FAILED", "ERROR"))), "")
    return run.returncode, failed or (lines[-1] if lines else ""), time.monotonic() - t0


def _check_import(where: Path) -> None:
    """The copy, not the checkout, must be what the tests import."""
    env = {**os.environ, "PYTHONPATH": str(where)}
    got = subprocess.run(
        [sys.executable, "-c", "import netslim; print(netslim.__file__)"],
        cwd=where, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not got.startswith(str(where)):
        raise SystemExit(f"the copy is not imported: {got}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated mutant keys")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.key in args.only.split(",")]
    rows, baseline = [], "not run"
    with tempfile.TemporaryDirectory(prefix="netslim-mutants-") as tmp:
        clean = Path(tmp) / "clean"
        _copy(clean)
        _check_import(clean)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            rc, line, secs = _pytest(clean, tests, stop=False, timeout=args.timeout)
            baseline = f"exit {rc} in {secs:.0f} s: {line}"
            print("baseline:", baseline, flush=True)
            if rc != 0:
                raise SystemExit("the unmutated tests must pass first")
        for m in chosen:
            where = Path(tmp) / f"mutant_{m.key}"
            _copy(where)
            if misfits := m.misfits(where):
                raise SystemExit(f"mutant {m.key}: " + "; ".join(misfits))
            for path, old, new in m.patches():
                target = where / path
                target.write_text(target.read_text().replace(old, new))
            rc, line, secs = _pytest(where, m.tests, stop=True, timeout=args.timeout)
            verdict = "killed" if rc == 1 else ("SURVIVED" if rc == 0 else f"exit {rc}")
            print(f"{m.key}: {verdict} ({secs:.0f} s) {line}", flush=True)
            rows.append((m, verdict, line, secs))
            shutil.rmtree(where)
    _write(rows, baseline, partial=bool(args.only))
    return 0 if all(v == "killed" for _, v, _, _ in rows) else 1


def _earlier_rows(text: str, skip: set[str]) -> dict[str, str]:
    """Table rows of the last run for the mutants not run now (``--only``), by key."""
    if START not in text or END not in text:
        return {}
    section = text.split(START, 1)[1].split(END, 1)[0]
    rows = {}
    for line in section.splitlines():
        key = line.split("|")[1].strip() if line.startswith("| ") else ""
        if key and key not in skip and any(m.key == key for m in MUTANTS):
            rows[key] = line
    return rows


def _write(rows: list, baseline: str, partial: bool = False) -> None:
    text = DOC.read_text() if DOC.exists() else "# Testing: how we know the tests can fail\n\n"
    ran = {m.key for m, *_ in rows}
    kept = _earlier_rows(text, ran) if partial else {}
    out = [
        START,
        "## Mutation check",
        "",
        "Written by `bench/mutation_check.py` (one command:",
        "`.venv/bin/python bench/mutation_check.py`). Each mutant below is a hand-made patch to a",
        "temporary copy of `netslim/`; the listed tests run against that copy with `pytest -x`.",
        "*killed* = a test failed (pytest exit 1). The same tests pass on the unmutated copy first.",
        "",
        f"Baseline (unmutated copy, all listed tests): {baseline}",
        "",
        "| mutant | what is broken | file | tests run | verdict | first failure | s |",
        "|---|---|---|---|---|---|---|",
    ]
    fresh = {}
    for m, verdict, line, secs in rows:
        tests = "<br>".join(f"`{t}`" for t in m.tests)
        first = line.replace("|", "\\|")[:160]
        fresh[m.key] = (
            f"| {m.key} | {m.what} | `{m.path}` | {tests} | {verdict} | {first} | {secs:.0f} |"
        )
    out += [fresh.get(m.key) or kept[m.key] for m in MUTANTS if m.key in fresh or m.key in kept]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    note = (
        f" (only {', '.join(sorted(ran))}; the other rows are from the run before)" if kept else ""
    )
    out += ["", f"Run on {when}{note}.", END]
    section = "\n".join(out)
    if START in text and END in text:  # replace this script's section, keep the rest
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    raise SystemExit(main())
