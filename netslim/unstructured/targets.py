"""Which tensors unstructured pruning (and weight penalties) act on.

By default the ``weight`` of every Linear and Conv{1,2,3}d except the classifier: the last such
layer maps features to class scores and is small but very sensitive, so pruning it costs much
accuracy for few parameters (the usual practice since Han et al., 2015).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from netslim.core.names import check_module_names, first_within
from netslim.errors import UnsupportedModelError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Target:
    """One prunable tensor: ``module.<name>``, reported as ``key`` (``"features.0.weight"``)."""

    key: str
    module_name: str
    module: nn.Module
    name: str


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(path, m) for path, m in model.named_modules() if isinstance(m, PRUNABLE)]


def _ignored(path: str, ignore: Iterable[str]) -> bool:
    return first_within(path, ignore) is not None


def find_targets(
    model: nn.Module,
    *,
    ignore: Iterable[str] = (),
    include_classifier: bool = False,
    include_bias: bool = False,
) -> list[Target]:
    """Prunable tensors in module order. ``ignore`` names modules (a container ignores all it
    holds). Raises ConfigError for unknown names, UnsupportedModelError if nothing is left."""
    ignore = tuple(ignore)
    check_module_names(model, ignore, "ignore")
    modules = prunable_modules(model)
    if modules and not include_classifier:
        modules = modules[:-1]
    targets = []
    for path, module in modules:
        if _ignored(path, ignore):
            continue
        names = ["weight"] + (["bias"] if include_bias and module.bias is not None else [])
        for name in names:
            targets.append(Target(f"{path}.{name}" if path else name, path, module, name))
    if not targets:
        hint = (
            ""
            if include_classifier
            else " (the classifier is excluded unless include_classifier=True)"
        )
        raise UnsupportedModelError(
            f"{type(model).__name__} has no prunable Linear/Conv weights left to prune{hint}"
        )
    return targets
