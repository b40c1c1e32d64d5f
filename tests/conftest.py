"""Shared fixtures: small models defined in files so specs can rebuild them in a fresh process."""

from __future__ import annotations

import copy
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

# Hypothesis: examples never go to a database in the working tree (a temporary directory
# instead); under CI (CI=true) the examples are derandomized, so every CI run is the same run and
# a failure reproduces from its printed blob (derandomize implies no database at all).
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="netslim-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)  # its caches too, not ./.hypothesis
_HYPOTHESIS_DB = DirectoryBasedExampleDatabase(Path(_HYPOTHESIS_HOME) / "examples")
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", database=_HYPOTHESIS_DB)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build(width: int = 16):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(width * 14 * 14, 32), nn.ReLU(), nn.Linear(32, 10),
        )

    def not_a_model():
        return 42
    """
)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_model.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.fixture(autouse=True)
def _single_thread():
    """Two cores are shared by everything on this machine: keep each test on one thread, and
    start every test from the same random state."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


class FastJob:
    """A prune job small enough for a test (synthetic data, a few hundred samples, one epoch
    each, no latency timing, no progress bars), as ``JobSettings`` or as ``netslim prune`` flags;
    keyword overrides change any setting."""

    BASE: dict = {
        "data": "synthetic",
        "limit_train": 256,
        "limit_test": 128,
        "epochs": 1,
        "finetune_epochs": 1,
        "latency": False,
        "progress": False,
    }

    def settings(self, model: str, **overrides):
        from netslim.jobs.settings import JobSettings

        return JobSettings(model=model, **{**self.BASE, **overrides})

    def flags(self, **overrides) -> list[str]:
        values = {**self.BASE, **overrides}
        out: list[str] = []
        for key, value in values.items():
            if key in ("latency", "progress"):
                out += [] if value else [f"--no-{key}"]
            else:
                out += [f"--{key.replace('_', '-')}", str(value)]
        return out


@pytest.fixture
def fast_job() -> FastJob:
    return FastJob()


# -- no-op pruning check (`pytest --noop-prune`) -------------------------------------------------
# Every netslim.prune_ / prune_consistently_ / prune_step_ call prunes a deep copy and returns its
# real summary, leaving the caller's model untouched. A test that still passes while it pruned
# this way checks the report, not the model: the run lists those tests at the end. A test whose
# point is that nothing changes (bad input refused before any work) is marked
# ``@pytest.mark.noop_ok(reason)``: listed apart with its reason, and flagged if it never prunes.
_NOOP_PASSED: list[str] = []
_NOOP_EXEMPT: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--noop-prune",
        action="store_true",
        help="turn netslim.prune_ into a no-op on the caller's model; list tests that still pass",
    )


@pytest.fixture(autouse=True)
def _noop_prune(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if not request.config.getoption("--noop-prune"):
        yield
        return
    import netslim.api as api

    real, calls = api._run, []

    def on_a_copy(handler, model, config, *args, **kwargs):
        calls.append(type(config).__name__)
        return real(handler, copy.deepcopy(model), config, *args, **kwargs)

    monkeypatch.setattr(api, "_run", on_a_copy)
    # Python child processes (CLI runs, torchrun ranks) get the same no-op: tests/noop_site
    child_log = Path(tempfile.mkdtemp(prefix="netslim-noop-")) / "calls"
    site = Path(__file__).parent / "noop_site"
    monkeypatch.setenv("NETSLIM_NOOP_PRUNE_LOG", str(child_log))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    )
    yield
    if child_log.exists():
        calls += [f"{name} in a child process" for name in child_log.read_text().split()]
    request.node.stash[_NOOP_CALLS] = calls


_NOOP_CALLS = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "teardown" and item.config.getoption("--noop-prune"):
        calls = item.stash.get(_NOOP_CALLS, None)
        exempt = item.get_closest_marker("noop_ok")
        passed = getattr(item, "_netslim_call_passed", False)
        if exempt is not None and passed:
            reason = exempt.args[0] if exempt.args else exempt.kwargs.get("reason", "")
            state = "prunes" if calls else "NEVER PRUNES: drop the marker"
            _NOOP_EXEMPT.append(f"{item.nodeid} ({state}): {reason}")
        elif calls and passed:
            _NOOP_PASSED.append(f"{item.nodeid} ({', '.join(sorted(set(calls)))})")
    if report.when == "call":
        item._netslim_call_passed = report.passed


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not config.getoption("--noop-prune"):
        return
    terminalreporter.section("tests that pass although prune_ was a no-op")
    for line in _NOOP_PASSED or ["(none)"]:
        terminalreporter.write_line(line)
    terminalreporter.section("exempt: marked noop_ok (nothing may change)")
    for line in _NOOP_EXEMPT or ["(none)"]:
        terminalreporter.write_line(line)
