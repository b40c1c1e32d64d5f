"""bench/mutation_check.py's patches still apply to the code as it is now.

Each mutant is an exact text replacement; when the code it breaks is rewritten or moved, the
patch stops matching and the check can no longer say whether the tests would notice. This
test fails at that moment instead of at the next run of the check (the residual-add and
head-count mutants had drifted unnoticed: a try/except and a renamed variable)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mutation_check():
    spec = importlib.util.spec_from_file_location(
        "mutation_check", ROOT / "bench" / "mutation_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


CHECK = _mutation_check()


@pytest.mark.parametrize("mutant", CHECK.MUTANTS, ids=lambda m: m.key)
def test_every_patch_matches_once(mutant) -> None:
    assert mutant.misfits(ROOT) == []
    for path, _, _ in mutant.patches():
        assert (ROOT / path).exists()
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).exists(), test


def test_a_patch_that_no_longer_matches_is_named(tmp_path: Path) -> None:
    mutant = CHECK.MUTANTS[0]
    copy = tmp_path / mutant.path
    copy.parent.mkdir(parents=True)
    copy.write_text("nothing to patch here\n")
    assert mutant.misfits(tmp_path) == [f"{mutant.path}: matches 0 times"]
