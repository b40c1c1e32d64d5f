"""Parsers fed garbage raise netslim's own errors only (what the CLI turns into one line and exit
code 2), never a KeyError/AttributeError/TypeError traceback: a pruning plan from a dict, a YAML
recipe, and a saved artifact whose netslim.json was edited."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netslim
from netslim.errors import NetslimError
from netslim.jobs.recipe import parse_recipe
from netslim.structural import PruningPlan

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


def _ours_or_nothing(call, *args) -> None:
    with contextlib.suppress(NetslimError):
        call(*args)


# a plan-shaped dict with each level replaced by garbage now and then
plan_like = st.fixed_dictionaries(
    {"groups": st.one_of(
        json_values,
        st.dictionaries(st.text(max_size=4), st.one_of(json_values, st.fixed_dictionaries(
            {"size": json_values, "keep": st.one_of(json_values, st.lists(json_values, max_size=3))}
        )), max_size=3),
    )},
    optional={"version": json_values},
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(json_values, plan_like))
def test_pruning_plan_from_garbage(data) -> None:
    _ours_or_nothing(PruningPlan.from_dict, data)


recipe_lines = st.lists(
    st.sampled_from(
        [
            "model: zoo:lenet300", "model: [1, 2]", "data: synthetic", "seed: x", "steps:",
            "steps: 3", "  - prune: {ratio: 0.9}", "  - prune: {ratio: [1]}", "  - prune: 7",
            "  - finetune: {epochs: -1}", "  - nope: {}", "  - {}", "  -", "  - prune:",
            "  - quantize: {mode: 3}", "  - export: {format: onnx, x: 1}", "batch_size: 1e9",
            "- a", ": :", "{", "  - compress: {values: [exact]}", "limit_train: null",
        ]
    ),
    max_size=8,
).map("\n".join)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(recipe_lines, st.text(max_size=40)))
def test_recipe_from_garbage(text: str) -> None:
    _ours_or_nothing(parse_recipe, text, "r.yaml")


@pytest.fixture(scope="module")
def saved_manifest(tmp_path_factory) -> tuple[Path, dict]:
    """A real artifact (a channel-pruned then masked LeNet-5) whose netslim.json gets edited."""
    model = netslim.build_model("zoo:lenet5")
    netslim.prune_(model, netslim.Channels(ratio=0.5), example_inputs=torch.randn(1, 1, 28, 28))
    netslim.prune_(model, netslim.Unstructured(ratio=0.5))
    where = tmp_path_factory.mktemp("artifact")
    netslim.save(model, where)
    manifest = json.loads((where / "netslim.json").read_text())
    assert [step["kind"] for step in manifest["history"]] == ["structural", "masks"]
    return where, manifest


def _replace_at(value, path: list, new):
    """``value`` with the element at ``path`` (keys/indices, each taken modulo the size)
    replaced by ``new``."""
    if not path or not isinstance(value, (dict, list)) or not value:
        return new
    keys = list(value) if isinstance(value, dict) else list(range(len(value)))
    key = keys[path[0] % len(keys)]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[key] = _replace_at(value[key], path[1:], new)
    return copy


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=5), new=json_values)
def test_artifact_with_an_edited_manifest(saved_manifest, path, new, tmp_path_factory) -> None:
    """Any one value of netslim.json replaced (spec, history steps, plan groups, file list):
    ``load`` rebuilds the model or raises a netslim error (the checksum is in the manifest too,
    so an edit there must fail cleanly as well)."""
    where, manifest = saved_manifest
    edited = tmp_path_factory.mktemp("edited")
    for f in where.iterdir():
        (edited / f.name).write_bytes(f.read_bytes())
    (edited / "netslim.json").write_text(json.dumps(_replace_at(manifest, path, new)))
    _ours_or_nothing(netslim.load, edited)
