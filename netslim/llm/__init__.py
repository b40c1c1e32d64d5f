"""Pruning decoder-only language models one block at a time from calibration data.

Public API::

    LLMWeights(method="wanda"|"sparsegpt"|"magnitude", sparsity=0.5, nm=(2, 4))
    LLMWidth(sparsity=0.25, head_sparsity=0.25) / LLMDepth(remove=2)
    LLMPrune(method=..., ...)                               # any of them, one config
    netslim.prune_(model, LLMPrune(...), calibration=ids)   # or prune_model(model, cfg, ids)
    prune_streaming(src_dir, out_dir, LLMPrune(...), ids)   # blocks from / to safetensors shards
    token_sequences(tokenizer, text, seq_len, n)            # calibration ids (N, seq_len)
    perplexity(model, ids, seq_len=, stride=, max_tokens=)  # with its protocol in the result
    save(model, out, report, tokenizer) / load(out)         # HF layout; see io.py for loaders
    from_gguf(file, out_dir)                                # a GGUF file as a float32 HF folder
    register_llm_method("name", needs={"sq"|"gram"})        # add a per-weight method

Importing this package registers ``LLMPrune`` with ``netslim.prune_``.
"""

from netslim.llm import method as _method  # noqa: F401  (registers the prune_ handler)
from netslim.llm.calibration import capture_inputs, read_text, token_sequences
from netslim.llm.config import METHODS, LLMDepth, LLMPrune, LLMWeights, LLMWidth
from netslim.llm.depth import block_influence, remove_blocks
from netslim.llm.eval import generate_check, perplexity, throughput
from netslim.llm.gguf import from_gguf
from netslim.llm.io import load, save
from netslim.llm.methods import register_llm_method
from netslim.llm.prune import prune_model
from netslim.llm.streaming import prune_streaming

__all__ = [
    "METHODS", "LLMDepth", "LLMPrune", "LLMWeights", "LLMWidth", "block_influence", "capture_inputs", "from_gguf", "generate_check", "load",
    "perplexity", "prune_model", "prune_streaming", "read_text", "register_llm_method",
    "remove_blocks", "save", "throughput", "token_sequences",
]  # fmt: skip
