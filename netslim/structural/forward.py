"""Running a model's forward for analysis: plain (``run_model``), with the path of the module
being run kept up to date (``module_stack``), and on meta twins of its tensors (``meta_state``,
``to_meta``, ``meta_caller``, ``meta_forward``). The trace and the check forward after pruning
both run through these, with fused kernels off (``netslim.core.unfused``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from netslim.structural.graph import flatten_tensors
from netslim.structural.module_state import unchanged


@contextlib.contextmanager
def module_stack(model: nn.Module, graph: Any) -> Iterator[None]:
    """Keep ``graph.stack`` = the module paths being run, innermost last.

    Two global hooks and a name table instead of two hooks per module: registering hundreds of
    per-module handles cost more than the ops of a ResNet-50 forward."""
    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )

    names = {id(m): n for n, m in model.named_modules()}
    alive = list(model.modules())  # ids stay unique while the table is in use
    stack = graph.stack

    def pre(mod: nn.Module, _a: Any) -> None:
        name = names.get(id(mod))
        if name is not None:
            stack.append(name)

    outputs = getattr(graph, "module_outputs", None)  # a Graph (not the check's plain stack)

    def post(mod: nn.Module, _a: Any, out: Any) -> None:
        name = names.get(id(mod))
        if name is not None and stack and stack[-1] == name:
            stack.pop()
            if outputs is not None:
                dims = outputs.setdefault(name, [])
                for t in flatten_tensors(out):
                    if graph.has(t):
                        dims.extend(graph.layouts[id(t)][1])

    handles = [
        register_module_forward_pre_hook(pre),
        register_module_forward_hook(post, always_call=True),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        del alive


def run_model(model: nn.Module, example_inputs: Any) -> Any:
    """Call ``model`` on example inputs: a tuple is spread, a dict is passed as kwargs."""
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, torch.Tensor):
        return model(example_inputs)
    return model(*example_inputs)


def meta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A meta twin for every parameter and buffer name of ``model`` (tied names share one)."""
    twins: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    named = (
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    )
    for name, t in named:
        if t is not None:
            if id(t) not in twins:
                twins[id(t)] = torch.empty_like(t, device="meta")
            state[name] = twins[id(t)]
    return state


def to_meta(inputs: Any) -> Any:
    from torch.utils._pytree import tree_map

    return tree_map(lambda v: v.to("meta") if isinstance(v, torch.Tensor) else v, inputs)


def meta_caller(state: dict[str, torch.Tensor]) -> Any:
    """``call(model, inputs)`` that runs the forward with ``state`` in place of the model's
    own tensors (the model object itself is not modified)."""
    from torch.func import functional_call

    def call(m: nn.Module, x: Any) -> Any:
        if isinstance(x, Mapping):
            return functional_call(m, state, (), dict(x))
        return functional_call(m, state, x if isinstance(x, tuple) else (x,))

    return call


@contextlib.contextmanager
def meta_forward(model: nn.Module) -> Iterator[None]:
    """Around a forward on meta tensors: the CPU's attention kernel choice, and nothing the
    forward cached on the modules (rotary tables, masks, anchors) left behind."""
    with unchanged(model), _cpu_attention_on_meta():
        yield


@contextlib.contextmanager
def _cpu_attention_on_meta() -> Iterator[None]:
    """On meta tensors ``F.scaled_dot_product_attention`` picks the math backend, while the
    CPU run of the same code picks the fused flash kernel: a different op sequence, and the
    fused op is where the trace learns that the scale follows head_dim. While tracing on meta,
    ask the CPU which backend it would use (on empty stand-ins of the same shapes) and call
    that kernel on meta. (Patched on ``torch.nn.functional``, where torch's own attention,
    Hugging Face and timm look it up at call time.)"""
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention

    def sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = _flash_on_meta(*args, **kwargs)
        return original(*args, **kwargs) if out is None else out

    functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


def _flash_on_meta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor | None:
    if not q.is_meta or (attn_mask is not None and attn_mask.dtype == torch.bool):
        return None  # the generic path (a mismatch shows in validation, then a real trace)
    with _disable_current_modes():
        stand_in = [torch.empty(t.shape, dtype=t.dtype) for t in (q, k, v)]
        mask = None if attn_mask is None else torch.empty(attn_mask.shape, dtype=attn_mask.dtype)
        choice = torch._fused_sdp_choice(
            *stand_in, mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
        )
    if choice != torch.nn.attention.SDPBackend.FLASH_ATTENTION.value:
        return None
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return flash(q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]
