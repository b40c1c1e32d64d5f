"""Strict YAML recipe parsing: every error names the file and line of the offending entry.

Parsing keeps the YAML node tree (``yaml.compose``) rather than plain values, so a wrong field
three steps down is reported at its own line, not at the top of the file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netslim.core.names import did_you_mean
from netslim.errors import ConfigError
from netslim.jobs.recipe.schema import STEPS, RecipeSettings


@dataclass
class Recipe:
    settings: RecipeSettings
    steps: list[tuple[str, Any, int]]  # (kind, step config, line)
    source: str


def _yaml():
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover
        raise ConfigError("recipes need PyYAML: pip install netslim[export]") from exc
    return yaml


class _Where:
    def __init__(self, source: str):
        self.source = source

    def error(self, node: Any, message: str) -> ConfigError:
        return ConfigError(f"{self.source} line {node.start_mark.line + 1}: {message}")


def _value(node: Any) -> Any:
    yaml = _yaml()
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _check_type(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls: type, node: Any, where: _Where, what: str) -> Any:
    """An instance of dataclass ``cls`` from a YAML mapping node, checking names and types."""
    yaml = _yaml()
    if node is None or (isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")):
        return cls()
    if not isinstance(node, yaml.MappingNode):
        raise where.error(node, f"{what} must be a mapping of field: value")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key not in fields:
            hint = did_you_mean(str(key), fields)
            raise where.error(
                key_node,
                f"unknown field {key!r} in {what}{hint}; known: {', '.join(sorted(fields))}",
            )
        if key in values:
            raise where.error(key_node, f"field {key!r} given twice in {what}")
        value = _value(value_node)
        if not _check_type(value, hints[key]):
            raise where.error(
                value_node,
                f"{what}.{key} must be {_type_name(hints[key])}, got {value!r}",
            )
        values[key] = float(value) if hints[key] is float else value
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]  # fmt: skip
    if missing:
        raise where.error(node, f"{what} lacks required field(s): {', '.join(missing)}")
    return cls(**values)


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Validate a recipe text; raises :class:`ConfigError` with ``source line N: ...``."""
    yaml = _yaml()
    where = _Where(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{source}: a recipe is a mapping with 'model' and 'steps'")
    steps_node = None
    top = []
    for key_node, value_node in root.value:
        if key_node.value == "steps":
            steps_node = value_node
        else:
            top.append((key_node, value_node))
    settings = _build(
        RecipeSettings,
        yaml.MappingNode("tag:yaml.org,2002:map", top, start_mark=root.start_mark),
        where,
        "recipe",
    )
    if steps_node is None:
        raise where.error(root, "recipe has no 'steps' list")
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise where.error(steps_node, "'steps' must be a non-empty list")
    steps = []
    for item in steps_node.value:
        if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
            raise where.error(item, "each step is a one-key mapping like '- prune: {ratio: 0.9}'")
        key_node, body = item.value[0]
        kind = key_node.value
        if kind not in STEPS:
            hint = did_you_mean(str(kind), STEPS)
            raise where.error(key_node, f"unknown step {kind!r}{hint}; known: {', '.join(STEPS)}")
        steps.append((kind, _build(STEPS[kind], body, where, kind), key_node.start_mark.line + 1))
    return Recipe(settings=settings, steps=steps, source=source)


def load_recipe(path: str | os.PathLike) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    return parse_recipe(path.read_text(), str(path))
