"""Arguments every training command shares (model spec, data, optimiser basics, seed), declared
once so ``prune``, ``lottery`` and ``sensitivity`` spell and validate them the same way."""

from __future__ import annotations

import argparse
import math
from typing import Any, NoReturn

from netslim.core.names import did_you_mean

MODEL_HELP = (
    "zoo:NAME | torchvision:NAME | timm:NAME | hf:PATH | ultralytics:NAME.yaml | py:FILE.py:FACTORY"
)
DATA_HELP = (
    "fashion-mnist | digits | synthetic | DIR with IDX files | DIR of image class folders "
    "(train/ and val/, or one tree split by --val-split) | hf:DIR (datasets.save_to_disk)"
)


def parse_shape(text: str) -> list[int]:
    """``--example-shape 1,3,224,224`` -> ``[1, 3, 224, 224]``."""
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints like 1,3,224,224, got {text!r}"
        ) from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"shape dims must be positive, got {text!r}")
    if math.prod(dims) > MAX_EXAMPLE_NUMEL:
        raise argparse.ArgumentTypeError(
            f"shape {text!r} has more than {MAX_EXAMPLE_NUMEL:,} elements"
        )
    return dims


MAX_EXAMPLE_NUMEL = 1 << 26  # 256 MB of float32: an example input, not a data set
_MAX_INT = 1 << 31


def add_trust_code(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="allow rebuilding a model whose spec is py:FILE:FACTORY, which runs FILE: only for "
        "artifacts whose code you trust",
    )


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    add_weights(p)


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="trained weights for the model: a .safetensors file or a PyTorch state dict "
        "(read with weights_only=True, so no pickled code runs; one saved with "
        "torch.nn.utils.prune masks attached loads as weight_orig x weight_mask)",
    )


# One vocabulary: every training command spells these the same and starts from the same values.
DEFAULTS: dict[str, Any] = {"lr": 1e-3, "batch_size": 128, "seed": 0, "epochs": 2}
EPOCHS_HELP = "training epochs before pruning (0: use the model as built or as --weights gives it)"


def add_data(p: argparse.ArgumentParser, *, data_help: str = DATA_HELP) -> None:
    """``--data --lr --batch-size --limit-train --limit-test --seed``, same defaults everywhere."""
    p.add_argument(
        "--data",
        default="auto",
        help=f"{data_help} (auto: Fashion-MNIST for zoo models; other models need --data)",
    )
    p.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"], help="learning rate")
    p.add_argument(
        "--batch-size", type=positive_int, default=DEFAULTS["batch_size"], help="batch size"
    )
    p.add_argument(
        "--limit-train",
        type=positive_int,
        default=None,
        help="use a fixed subset of N training samples (default: all)",
    )
    p.add_argument(
        "--limit-test",
        type=positive_int,
        default=None,
        help="use a fixed subset of N test samples (default: all)",
    )
    add_seed(p)


def add_seed(p: argparse.ArgumentParser, *, help: str = "random seed") -> None:
    """``--seed``: a non-negative int, 0 unless given, in every command that has one."""
    p.add_argument("--seed", type=nonnegative_int, default=DEFAULTS["seed"], help=help)


def add_fraction(p: argparse.ArgumentParser, *, default: float, help: str) -> None:
    """``--ratio``: the fraction removed, in every command (``--rate``/``--sparsity`` still
    work, with a deprecation warning)."""
    p.add_argument("--ratio", type=fraction, default=default, help=help)
    for old in ("--rate", "--sparsity"):
        p.add_argument(
            old,
            dest="ratio",
            type=fraction,
            action=Deprecated,
            new="--ratio",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )


class Deprecated(argparse.Action):
    """An old spelling: stores into the new flag's destination and says so on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        from netslim.errors import warn

        warn(f"{option_string} is deprecated: use {self.new}")
        setattr(namespace, self.dest, values)


def _number(kind: type, text: str, ok: Any, what: str) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: 1 <= v < _MAX_INT, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    return _number(int, text, lambda v: 0 <= v < _MAX_INT, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: v > 0, "a number > 0")


def nonnegative_float(text: str) -> float:
    return _number(float, text, lambda v: v >= 0, "a number >= 0")


def fraction(text: str) -> float:
    """A fraction removed: in [0, 1)."""
    return _number(float, text, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def positive_fraction(text: str) -> float:
    """A fraction removed that must remove something: in (0, 1)."""
    return _number(float, text, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def kept_fraction(text: str) -> float:
    """A fraction kept (e.g. of MACs): in (0, 1]."""
    return _number(float, text, lambda v: 0 < v <= 1, "a fraction in (0, 1]")


def name_offsets(text: str) -> dict[str, float]:
    """``q_proj=0.15,k_proj=0.15`` → ``{"q_proj": 0.15, "k_proj": 0.15}``, offsets in (-1, 1)."""
    what = "NAME=OFFSET[,NAME=OFFSET...] with offsets in (-1, 1), e.g. q_proj=0.15,k_proj=0.15"
    result: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or name.strip() in result:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        result[name.strip()] = _number(float, value, lambda v: -1 < v < 1, what)
    return result


def choice(*names: str, what: str = "value") -> Any:
    """An enum-like flag: one of ``names`` (the error lists them)."""

    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {text!r}: choose one of {', '.join(names)}"
            )
        return text

    parse.__name__ = "choice"
    return parse


class Parser(argparse.ArgumentParser):
    """Bad input is one line on stderr and exit code 2 (no usage block); ``--help`` shows every
    default."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        first = message.splitlines()[0] if message else "invalid arguments"
        command = self.prog.partition(" ")[2]  # "netslim prune" -> "prune"; "netslim" -> ""
        self.exit(2, f"netslim: error: {command + ': ' if command else ''}{first}\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        """argparse leaves a subcommand's unknown flags to the top parser, which cannot say
        whose they were: the subcommand's own parser reports them, with the nearest flag."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = _subcommand_parser(self, getattr(parsed, "command", None)) or self
            owner.error(_unrecognized(owner, extra))
        return parsed


def _subcommand_parser(parser: argparse.ArgumentParser, name: str | None) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return None


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """``unrecognized arguments: ...`` and, for the first unknown flag, what was likely meant:
    a positional argument given as a flag (``--model``), or the closest flag by spelling."""
    text = f"unrecognized arguments: {' '.join(extra)}"
    flag = next((e.split("=")[0] for e in extra if e.startswith("--")), None)
    if flag is None:
        return text
    positional = {
        a.dest: a.metavar or a.dest.upper() for a in parser._actions if not a.option_strings
    }
    name = flag[2:].replace("-", "_")
    if name in positional:
        return f"{text} ({positional[name]} is positional: {parser.prog} {positional[name]} ...)"
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    return text + did_you_mean(flag, flags, cutoff=0.75, quote=str)


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and not any(default is skip for skip in (None, False, argparse.SUPPRESS))
            and "default" not in text
            and not (isinstance(default, list) and not default)
        ):
            text += " (default: %(default)s)"
        return text


def add_data_source(p: argparse.ArgumentParser) -> None:
    """``--val-split`` and the ``hf:`` column names: how to read an image folder or ``hf:`` set."""
    p.add_argument(
        "--val-split",
        type=positive_fraction,
        default=None,
        metavar="FRACTION",
        help="image folder or hf: set without a validation split: hold out this fraction of "
        "each class (default 0.2)",
    )
    for kind in ("image", "text", "label"):
        p.add_argument(
            f"--{kind}-column",
            default=None,
            metavar="NAME",
            help=f"hf: data sets: the {kind} column (default: detected from the features)",
        )


def data_settings(args: argparse.Namespace, data: str | None) -> Any:
    """The model and data the :func:`add_model`, :func:`add_data` and :func:`add_data_source`
    arguments describe (``data``: ``--data`` resolved), as ``netslim.jobs.model_data`` reads
    them."""
    from netslim.jobs.model_data import DataSettings

    return DataSettings(
        model=args.model,
        data=data,
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        seed=args.seed,
        val_split=args.val_split,
        image_column=args.image_column,
        text_column=args.text_column,
        label_column=args.label_column,
    )
