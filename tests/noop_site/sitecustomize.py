"""``pytest --noop-prune`` for Python child processes (a CLI run, a torchrun rank, a killed job).

conftest puts this folder first on PYTHONPATH and names a log file in NETSLIM_NOOP_PRUNE_LOG only
under that flag; Python imports ``sitecustomize`` at start-up, so a child gets the same no-op
``netslim.api._run`` as the test (prune a deep copy, return its real summary) and appends each
call's config type to the log, which the test's report then lists with its own calls."""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import os
import sys

LOG = os.environ.get("NETSLIM_NOOP_PRUNE_LOG")


def _patch(api) -> None:
    real = api._run

    def on_a_copy(handler, model, config, *args, **kwargs):
        with open(LOG, "a") as log:
            log.write(type(config).__name__ + "\n")
        return real(handler, copy.deepcopy(model), config, *args, **kwargs)

    api._run = on_a_copy


class _Loader(importlib.abc.Loader):
    def __init__(self, inner) -> None:
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Patches ``netslim.api`` right after it is first executed; imports nothing itself."""

    def find_spec(self, name, path, target=None):
        if name != "netslim.api":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if LOG:
    sys.meta_path.insert(0, _Finder())
