"""What every method config shares: a format version, JSON round trips (history records,
reports, recipes) and the validators of common kinds of setting, so the same kind of mistake
gets the same message everywhere."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from netslim.core.names import did_you_mean
from netslim.errors import ConfigError

T = TypeVar("T", bound="ConfigBase")


class ConfigBase:
    """Mixin for the method config dataclasses."""

    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Rebuild from :meth:`to_dict` (an optional ``version`` key must match), validated."""
        data = dict(data)
        version = data.pop("version", cls.VERSION)
        if version != cls.VERSION:
            raise ConfigError(
                f"{cls.__name__} settings of version {version}: expected {cls.VERSION}"
            )
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                hint = did_you_mean(key, names)
                raise ConfigError(f"{cls.__name__} has no setting {key!r}{hint}")
        return cls(**data)


def fraction(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A number in (0, 1) (``allow_zero``: [0, 1))."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number in (0, 1), got {value!r}")
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"{name} must be in {interval}, got {value}")
    return float(value)


def integer(name: str, value: Any, low: int, *, optional: bool = False) -> int | None:
    """An int >= ``low`` (``optional``: or None)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    """One of ``options``: the one check (and message) for every named choice netslim takes."""
    if value not in options:
        raise ConfigError(f"unknown {name} {value!r}: choose one of {', '.join(options)}")
    return value
