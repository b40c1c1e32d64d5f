"""Write a small LLaMA as a GGUF file (float32 tensors, a byte-level BPE vocabulary), the way
llama.cpp's converter lays one out, so tests can read GGUF without a download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# transformers' state-dict names -> GGUF's, per block and for the rest of the model
_BLOCK = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}  # fmt: skip
_MODEL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def _llama_cpp_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp orders each head's q/k rows by rotary pair; transformers undoes it on load."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_gguf(model: torch.nn.Module, tokenizer, path: Path) -> Path:
    """``model`` (``LlamaForCausalLM``, untied head) and its byte-level ``tokenizer`` as GGUF."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(float(getattr(c, "rope_theta", None) or 10000.0))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    for name, tensor in model.state_dict().items():
        value = tensor.detach().float().numpy().astype(np.float32)
        if name in _MODEL:
            w.add_tensor(_MODEL[name], value)
            continue
        parts = name.split(".")  # model.layers.<i>.<module path>.weight
        module = ".".join(parts[3:-1])
        if module == "self_attn.q_proj":
            value = _llama_cpp_rows(value, c.num_attention_heads)
        elif module == "self_attn.k_proj":
            value = _llama_cpp_rows(value, c.num_key_value_heads)
        w.add_tensor(f"blk.{parts[2]}.{_BLOCK[module]}.weight", value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
