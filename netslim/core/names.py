"""Module names as users write them (``ignore=``, ``per_module=``): one matcher and one check,
so every method reads ``"features.3"`` the same way (the module and everything inside it)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from torch import nn

from netslim.errors import ConfigError


def within(path: str, name: str) -> bool:
    """``path`` is the module ``name`` or inside it (``""`` is the whole model)."""
    return name == "" or path == name or path.startswith(name + ".")


def first_within(path: str, names: Iterable[str]) -> str | None:
    """The first of ``names`` that ``path`` is :func:`within`, or None."""
    return next((n for n in names if within(path, n)), None)


def did_you_mean(
    word: str,
    options: Iterable[str],
    *,
    n: int = 1,
    cutoff: float = 0.6,
    quote: Callable[[str], str] = repr,
) -> str:
    """`` (did you mean 'x'?)`` with the closest of ``options`` to a name the user mistyped
    (up to ``n``, each through ``quote``), or ``""`` when none is close: the one hint every
    unknown name gets (settings, module names, recipe fields and steps, command-line flags)."""
    close = difflib.get_close_matches(word, sorted(options), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(map(quote, close))}?)" if close else ""


def check_module_names(model: nn.Module, names: Iterable[str], what: str) -> None:
    """ConfigError naming the first of ``names`` that is not a module of ``model`` (with the
    closest real names as a hint)."""
    known = {n for n, _ in model.named_modules()}
    for n in names:
        if n not in known:
            hint = did_you_mean(n, known, n=3)
            raise ConfigError(f"{what}: no module named {n!r} in the model{hint}")


# the config fields that name modules (Channels has all three, Unstructured ``ignore``)
NAME_FIELDS = ("ignore", "freeze", "per_module")


def check_config_names(model: nn.Module, config: object) -> None:
    """Every module a pruning config names exists in ``model``: the check pruning makes, callable
    before any training so that a typo costs nothing."""
    for field in NAME_FIELDS:
        check_module_names(model, list(getattr(config, field, None) or ()), field)
