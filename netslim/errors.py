"""Exceptions with messages a user can act on.

Every error netslim raises on bad input derives from :class:`NetslimError`, so the CLI can turn
it into one clear line and a non-zero exit code without a traceback.
"""

from __future__ import annotations


class NetslimError(Exception):
    """Base class: a problem the user can fix (bad input, unsupported model, corrupt file)."""


class ConfigError(NetslimError, ValueError):
    """An impossible setting: a ratio out of range, an unknown criterion or method name."""


class UnsupportedModelError(NetslimError):
    """The model (or one of its layers) cannot be handled by the requested method."""


class PruningError(NetslimError):
    """Pruning failed part-way; the model was restored to its state before the call."""

    def __init__(self, message: str, module: str | None = None):
        self.module = module
        super().__init__(f"{module}: {message}" if module else message)


class ArtifactError(NetslimError):
    """A saved netslim directory is missing, incomplete or corrupt."""


class DataError(NetslimError):
    """A data source is missing or unreadable; the message says how to get it."""


class UntrustedCodeError(ArtifactError):
    """Rebuilding a model would run Python code from a file; the caller has not consented."""


class NetslimWarning(UserWarning):
    """A result to look at twice, not an error: a time plan that needed a lower floor than the
    default, a pruned model timed no faster, layers left in float. The library warns with it;
    the CLI prints it as one ``netslim: warning:`` line and a prune job's report lists it."""


def warn(message: str) -> None:
    """One line on stderr for something the user should know but that is not an error."""
    import sys

    print(f"netslim: warning: {message}", file=sys.stderr, flush=True)
