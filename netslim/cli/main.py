"""``netslim`` command line: one table of subcommands, each a parser and a runner in
``netslim.cli.<command>``; the work lives in ``netslim.jobs``.

Every user-fixable error (:class:`netslim.errors.NetslimError`) becomes one line on stderr and
exit code 2, with no traceback; under ``torchrun`` the line says which rank speaks. A library
warning about a result (:class:`netslim.errors.NetslimWarning`) becomes one ``netslim: warning:``
line, not Python's file-and-source-line form.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from netslim._runtime import PYTREE_LOG, quiet_log
from netslim.cli import (
    compact,
    demo,
    deploy,
    evaluate,
    latency,
    llm,
    lottery,
    prune,
    sensitivity,
)
from netslim.cli.args import Parser
from netslim.errors import NetslimError, NetslimWarning


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add(subparsers)`` declares its arguments, ``run(args)`` returns the exit code."""

    name: str
    add: Callable[[Any], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]


# The one list of subcommands, in the order ``netslim --help`` shows them.
COMMANDS: tuple[Command, ...] = (
    Command("prune", prune.add_parser, prune.run),
    Command("demo", demo.add_parser, demo.run),
    Command("eval", evaluate.add_parser, evaluate.run),
    Command("lottery", lottery.add_parser, lottery.run),
    Command("compress", deploy.add_compress, deploy.run_compress),
    Command("run", deploy.add_run, deploy.run_recipe),
    Command("export", deploy.add_export, deploy.run_export),
    Command("llm", llm.add_parser, llm.run),
    Command("sensitivity", sensitivity.add_parser, sensitivity.run),
    Command("compact", compact.add_parser, compact.run),
    Command("latency", latency.add_parser, latency.run),
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="netslim", description="Model pruning and network slimming for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad arguments: argparse has printed the one line
        if exc.code:
            return int(exc.code) if isinstance(exc.code, int) else 2
        raise
    runner = {command.name: command.run for command in COMMANDS}[args.command]
    # restores Python's own warning display and torch's log level when the command returns
    hide = getattr(args, "no_progress", False)
    with warnings.catch_warnings(), quiet_log(PYTREE_LOG), _hub_progress_bars_hidden(hide):
        warnings.showwarning = _one_line(warnings.showwarning)
        try:
            return runner(args)
        except NetslimError as exc:
            print(f"netslim: error: {_rank_prefix()}{exc}", file=sys.stderr)
            return 2


@contextlib.contextmanager
def _hub_progress_bars_hidden(hide: bool) -> Iterator[None]:
    """``--no-progress`` hides Hugging Face's bars too (transformers' "Loading weights"): its
    hub library reads this variable when first imported, which a command does after this."""
    name = "HF_HUB_DISABLE_PROGRESS_BARS"
    if not hide:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _one_line(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` printing a :class:`NetslimWarning` as one line; ``show`` prints
    the others (PyTorch's, the model libraries') as it did."""

    def display(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, NetslimWarning):
            show(message, category, filename, lineno, file, line)
            return
        print(f"netslim: warning: {_rank_prefix()}{message}", file=file or sys.stderr, flush=True)

    return display


def _rank_prefix() -> str:
    world = os.environ.get("WORLD_SIZE")
    if world and world != "1":
        return f"[rank {os.environ.get('RANK', '?')}/{world}] "
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
