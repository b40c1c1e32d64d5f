"""Tiny Hugging Face models with random weights, built offline (one factory per family).

Each factory starts from a small config and takes keyword overrides of its fields, seeds the
RNG so the weights are the same on every call, and returns the model in eval mode. Importing
this module skips the calling test module when transformers is not installed.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

_BERT = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=64,
)  # fmt: skip
_LLAMA = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
)  # fmt: skip
_GPT2 = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=256, n_positions=128)


def _build(config_cls: Any, model_cls: Any, defaults: dict, overrides: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return model_cls(config_cls(**{**defaults, **overrides})).eval()


def tiny_bert(**overrides: Any) -> torch.nn.Module:
    """``BertModel`` (an encoder without a head)."""
    return _build(transformers.BertConfig, transformers.BertModel, _BERT, overrides)


def tiny_llama(**overrides: Any) -> torch.nn.Module:
    """``LlamaForCausalLM`` with grouped-query attention (2 KV heads for 4 query heads)."""
    return _build(transformers.LlamaConfig, transformers.LlamaForCausalLM, _LLAMA, overrides)


def tiny_gpt2(**overrides: Any) -> torch.nn.Module:
    """``GPT2LMHeadModel``."""
    return _build(transformers.GPT2Config, transformers.GPT2LMHeadModel, _GPT2, overrides)


def tiny_mixtral(**overrides: Any) -> torch.nn.Module:
    """``MixtralForCausalLM``: 4 experts stacked in 3-D weights, 2 per token (grouped matmuls)."""
    defaults = {**_LLAMA, "num_local_experts": 4, "num_experts_per_tok": 2}
    return _build(transformers.MixtralConfig, transformers.MixtralForCausalLM, defaults, overrides)


def tiny_qwen2_moe(**overrides: Any) -> torch.nn.Module:
    """``Qwen2MoeForCausalLM``: routed experts plus a gated shared expert."""
    defaults = {
        **_LLAMA, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 48,
    }  # fmt: skip
    return _build(
        transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM, defaults, overrides
    )
