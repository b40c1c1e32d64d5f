"""Which blocks can be removed without breaking the model.

A block is removable when deleting it leaves a model that still runs and still means something:
it sits in an ``nn.Sequential`` or ``nn.ModuleList`` (so it can leave the module tree and the
container just iterates over fewer children), its output has its input's shape (so the next
block still fits), and it is residual (``out = x + f(x)``, so the identity is a sensible
stand-in for it). Residuality is observed, not guessed from class names: one forward pass runs
under a ``TorchFunctionMode`` that watches additions, and a block is residual when one operand of
an addition inside it is the very tensor the block received.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from netslim.errors import ConfigError, UnsupportedModelError

_ADDS = {
    torch.add,
    Tensor.add,
    Tensor.add_,
    Tensor.__add__,
    Tensor.__radd__,
    Tensor.__iadd__,
}


@dataclass(frozen=True)
class Block:
    """One removable block: ``container.index`` in the module tree, e.g. ``layer2.3``."""

    container: str
    index: int
    residual: bool = True
    returns_tensor: bool = True  # False: a tuple or other structure (older Hugging Face layers)

    @property
    def name(self) -> str:
        return f"{self.container}.{self.index}" if self.container else str(self.index)


def block_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    """The tensor a block transforms: its first positional tensor or ``hidden_states``."""
    if args and isinstance(args[0], Tensor):
        return args[0]
    value = kwargs.get("hidden_states")
    return value if isinstance(value, Tensor) else None


def block_output(output: Any) -> Tensor | None:
    """The main output: a tensor, or the first element of a tuple/list (HF layers)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


class BypassedBlock(nn.Identity):
    """A residual block a latency plan removed (``Channels(blocks=True)``), kept in place so
    module names stay valid: returns the tensor it is given (the first positional tensor, or
    ``hidden_states``) and takes whatever else its caller passes. Hugging Face layers are called
    with masks, position embeddings and caches as keywords, which ``nn.Identity`` refuses.
    ``netslim.export.save_pretrained_pruned`` deletes those in a Hugging Face layer list."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = block_input(args, kwargs)
        return x if x is not None else (args[0] if args else None)


def containers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Sequential``/``nn.ModuleList`` in ``model`` by dotted name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (nn.Sequential, nn.ModuleList))
    }


class _AddWatcher(TorchFunctionMode):
    """Marks a running block residual when an addition inside it uses the block's input."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, Tensor]] = []
        self.residual: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in _ADDS and self.stack:
            operands = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
            for name, tensor in self.stack:
                if any(op is tensor for op in operands):
                    self.residual.add(name)
        return func(*args, **kwargs)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Run a batch through ``model``: a tensor, a tuple ``(x, ...)`` (labels ignored) or a dict.

    Tensors move to the model's device, so CPU loaders work with a model on a GPU.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    def move(value: Any) -> Any:
        return value.to(device) if isinstance(value, Tensor) else value

    if isinstance(inputs, dict) or hasattr(inputs, "keys"):
        return model(**{k: move(v) for k, v in inputs.items()})
    if isinstance(inputs, (tuple, list)):
        return model(move(inputs[0]))
    return model(move(inputs))


def _probe(model: nn.Module, example_inputs: Any) -> dict[str, dict[str, Any]]:
    """One eval forward pass: input/output shapes of every container child and residuality."""
    found: dict[str, dict[str, Any]] = {}
    watcher = _AddWatcher()
    handles = []

    def pre(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = block_input(args, kwargs)
            found.setdefault(name, {"in": None, "out": None})
            if x is not None:
                found[name]["in"] = tuple(x.shape)
                watcher.stack.append((name, x))

        return hook

    def post(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            out = block_output(output)
            found[name]["out"] = tuple(out.shape) if out is not None else None
            found[name]["tensor_out"] = isinstance(output, Tensor)
            if watcher.stack and watcher.stack[-1][0] == name:
                watcher.stack.pop()

        return hook

    for cname, container in containers(model).items():
        for index, child in enumerate(container):
            name = f"{cname}.{index}" if cname else str(index)
            handles.append(child.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(child.register_forward_hook(post(name), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), watcher:
            call_model(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for name, info in found.items():
        info["residual"] = name in watcher.residual
    return found


def _split(name: str) -> tuple[str, int]:
    container, _, index = name.rpartition(".")
    return container, int(index)


def find_blocks(model: nn.Module, example_inputs: Any) -> list[Block]:
    """Every removable block, in forward order (outer blocks before blocks nested in them).

    A block nested inside another removable block is not listed: removing the outer one would
    take it along, and scoring both would double-count the same computation.
    """
    probe = _probe(model, example_inputs)
    names = [
        name
        for name, info in probe.items()
        if info["residual"]
        and info["in"] is not None
        and info["in"] == info["out"]
        and any(True for _ in model.get_submodule(name).parameters())
    ]
    outer = [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]
    return [Block(*_split(n), returns_tensor=probe[n].get("tensor_out", True)) for n in outer]


def resolve_blocks(
    model: nn.Module, example_inputs: Any, names: Sequence[str] | None = None
) -> list[Block]:
    """The candidate blocks: found automatically, or the user's ``names`` checked for removability.

    A named block must be a child of a Sequential/ModuleList (else it cannot leave the tree) and
    must keep its input's shape (else the next block would no longer fit); it need not be
    residual, since the user may know better than the add-watcher.
    """
    if names is None:
        blocks = find_blocks(model, example_inputs)
        if not blocks:
            raise UnsupportedModelError(
                "no removable block found: depth pruning needs residual blocks whose output has "
                "the input's shape inside an nn.Sequential or nn.ModuleList"
            )
        return blocks
    if not names:
        raise ConfigError("the list of blocks is empty")
    if len(set(names)) != len(names):
        raise ConfigError(f"blocks are named more than once: {list(names)}")
    holders = containers(model)
    probe: dict[str, dict[str, Any]] | None = None
    blocks = []
    for name in names:
        container, _, index = name.rpartition(".")
        if container not in holders or not index.isdigit() or int(index) >= len(holders[container]):
            raise ConfigError(
                f"block {name!r} is not a child of an nn.Sequential or nn.ModuleList, so it "
                "cannot be removed (name blocks like 'layer2.3' or 'encoder.layer.5')"
            )
        if probe is None:
            probe = _probe(model, example_inputs)
        info = probe.get(name)
        if info is None or info["in"] is None or info["out"] is None:
            raise ConfigError(f"block {name!r} did not run on the example inputs")
        if info["in"] != info["out"]:
            raise ConfigError(
                f"block {name!r} changes the shape {list(info['in'])} -> {list(info['out'])}, "
                "so removing it would break the next layer"
            )
        blocks.append(Block(container, int(index), residual=bool(info["residual"])))
    return blocks
