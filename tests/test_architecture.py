"""The floors hold: no import cycle anywhere in netslim, the import-linter contract is kept, the
method table is the one way to a method, and the CLI and the API give the same model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import netslim
from netslim.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (as a path that closes on itself), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(edges):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, ()))))
    return None


def _import_graph() -> dict[str, set[str]]:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("netslim", include_external_packages=False)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def test_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules() -> None:
    """Function-level imports count too: a lazy import is still a dependency."""
    assert _cycle(_import_graph()) is None


def test_no_import_cycle_between_packages() -> None:
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for importer, imported in _import_graph().items():
        for target in imported:
            if package(importer) != package(target):
                edges.setdefault(package(importer), set()).add(package(target))
    assert _cycle(edges) is None


def test_import_contract_kept() -> None:
    """The layers contract in pyproject.toml (also run by `make lint` and CI)."""
    pytest.importorskip("importlinter")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports; raise SystemExit(lint_imports())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    text = (ROOT / "pyproject.toml").read_text()
    assert 'type = "layers"' in text and "ignore_imports" not in text


def test_no_method_reached_by_name() -> None:
    """The method table imports each method; nothing looks one up with importlib."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "netslim").rglob("*.py")
        if "importlib.import_module" in path.read_text() or "__import__(" in path.read_text()
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("flags", "config"),
    [
        (
            ["--method", "channel", "--ratio", "0.4", "--scope", "global"],
            lambda: netslim.Channels(ratio=0.4, scope="global", criterion="l2"),
        ),
        (
            ["--method", "unstructured", "--ratio", "0.7", "--scope", "layer"],
            lambda: netslim.Unstructured(ratio=0.7, scope="layer", criterion="l1"),
        ),
    ],
)
def test_cli_and_api_give_the_same_model(tmp_path: Path, flags: list[str], config) -> None:
    """``netslim prune`` (no training) and ``prune_`` with the same settings: equal tensors."""
    from netslim.models.spec import make_example_inputs
    from netslim.training import seed_everything

    out = tmp_path / "cli"
    argv = ["prune", "zoo:lenet5", *flags, "--data", "none", "--no-latency", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    by_cli = netslim.load(out / "model")

    seed_everything(0)
    by_api = netslim.build_model("zoo:lenet5")
    netslim.prune_(by_api, config(), example_inputs=make_example_inputs(by_api, None))
    if "unstructured" in flags:  # a finished unstructured CLI run saves its masks folded
        from netslim.unstructured.method import fold_masks

        fold_masks(by_api)

    cli_state, api_state = by_cli.state_dict(), by_api.state_dict()
    assert list(cli_state) == list(api_state)
    for key, tensor in api_state.items():
        assert torch.equal(cli_state[key], tensor), key
    # both were pruned (equal because both stayed dense would pass the checks above)
    from pruned import param_count, weights, zero_fraction

    if "unstructured" in flags:
        assert (zeros := zero_fraction(weights(by_cli))) > 0.65, zeros  # ratio 0.7 per layer
    else:
        dense = netslim.build_model("zoo:lenet5")
        assert param_count(by_cli) < 0.8 * param_count(dense)  # ratio 0.4 of the channels


@pytest.mark.parametrize(
    ("flags", "config"),
    [
        (
            ["--method", "channel", "--ratio", "0.4", "--scope", "global"],
            lambda **kw: netslim.Channels(ratio=0.4, scope="global", criterion="l2", **kw),
        ),
        (
            ["--method", "unstructured", "--ratio", "0.7", "--scope", "layer"],
            lambda **kw: netslim.Unstructured(ratio=0.7, scope="layer", criterion="l1", **kw),
        ),
    ],
)
def test_cli_and_api_reconstruct_alike_by_default(tmp_path: Path, flags: list[str], config):
    """With data and no fine-tuning both refit by default (one rule: ``auto_reconstruct``), on
    the same calibration batches: equal tensors, and not the plain model's."""
    from netslim.data import make_loaders
    from netslim.models.spec import make_example_inputs
    from netslim.training import seed_everything
    from netslim.unstructured.method import fold_masks

    data = ["--data", "synthetic", "--limit-train", "64", "--limit-test", "32"]
    data += ["--batch-size", "16", "--epochs", "0", "--finetune-epochs", "0"]
    out = tmp_path / "cli"
    argv = ["prune", "zoo:lenet5", *flags, *data, "--no-latency", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    by_cli = netslim.load(out / "model")

    def by_api(**kw):
        seed_everything(0)
        model = netslim.build_model("zoo:lenet5")
        train_loader, _ = make_loaders(
            "synthetic", batch_size=16, limit_train=64, limit_test=32, seed=0, model=model
        )
        example = make_example_inputs(model, [1, *train_loader.dataset[0][0].shape])
        netslim.prune_(model, config(**kw), example_inputs=example, train_loader=train_loader)
        if "unstructured" in flags:  # a finished unstructured CLI run saves its masks folded
            fold_masks(model)
        return model.state_dict()

    cli_state, api_state = by_cli.state_dict(), by_api()
    assert list(cli_state) == list(api_state)
    for key, tensor in api_state.items():
        assert torch.equal(cli_state[key], tensor), key
    plain = by_api(reconstruct=False)
    assert any(not torch.equal(plain[k], v) for k, v in api_state.items())
