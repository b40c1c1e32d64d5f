"""Perplexity with a stated, fixed protocol; CPU throughput; a ``generate()`` smoke check.

Perplexity uses strided sliding windows (the protocol of the Hugging Face "Perplexity of
fixed-length models" guide): windows of ``seq_len`` tokens start every ``stride`` tokens and
only the tokens not scored by the previous window are scored, each with up to
``seq_len − stride`` tokens of context. The first ``max_tokens`` tokens of the text are used.
Everything that changes the number — seq_len, stride, tokens scored — is in the result.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch
from torch import Tensor, nn

from netslim.errors import ConfigError, DataError


@torch.no_grad()
def perplexity(
    model: nn.Module,
    ids: Tensor,
    *,
    seq_len: int = 512,
    stride: int | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """``exp(mean NLL)`` over the scored tokens of a 1-D id tensor, with the protocol."""
    stride = stride or seq_len
    if not 0 < stride <= seq_len:
        raise ConfigError(f"stride must be in (0, seq_len={seq_len}], got {stride}")
    ids = ids.flatten()
    if max_tokens is not None:
        ids = ids[:max_tokens]
    total = ids.numel()
    if total < 2:
        raise DataError("evaluation text has fewer than 2 tokens")
    model.eval()
    nll = 0.0
    scored = 0
    windows = 0
    prev_end = 0
    for begin in range(0, total, stride):
        end = min(begin + seq_len, total)
        window = ids[begin:end][None]
        first_new = max(prev_end - begin, 1)  # position of the first token not yet scored
        logits = model(input_ids=window, use_cache=False).logits[0, first_new - 1 : -1].float()
        targets = window[0, first_new:]
        nll += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        scored += targets.numel()
        windows += 1
        prev_end = end
        if end == total:
            break
    return {
        "ppl": math.exp(nll / scored),
        "nll": nll / scored,
        "tokens_scored": scored,
        "seq_len": seq_len,
        "stride": stride,
        "windows": windows,
    }


@torch.no_grad()
def throughput(
    model: nn.Module, prompt: Tensor, *, new_tokens: int = 32, repeats: int = 3
) -> dict[str, float]:
    """Median prefill tokens/s (one forward of the prompt) and decode tokens/s (greedy
    ``generate`` with the KV cache, EOS ignored) on the current thread count."""
    model.eval()
    prompt = prompt.flatten()[None]
    prefill, decode = [], []
    for _ in range(repeats + 1):  # the first run warms up
        start = time.perf_counter()
        model(input_ids=prompt, use_cache=False)
        t_prefill = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(
            prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=0,
        )  # fmt: skip
        t_gen = time.perf_counter() - start
        generated = out.shape[1] - prompt.shape[1]
        prefill.append(prompt.shape[1] / t_prefill)
        decode.append(generated / max(t_gen - t_prefill, 1e-9))
    return {
        "prefill_tok_s": statistics.median(prefill[1:]),
        "decode_tok_s": statistics.median(decode[1:]),
        "prompt_tokens": prompt.shape[1],
        "new_tokens": new_tokens,
        "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def generate_check(model: nn.Module, prompt: Tensor, new_tokens: int = 8) -> Tensor:
    """Greedy ``generate`` with the KV cache must produce ``new_tokens`` valid token ids."""
    out = model.generate(
        prompt.flatten()[None], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, pad_token_id=0,
    )  # fmt: skip
    vocab = model.get_output_embeddings().weight.shape[0]
    if out.shape[1] != prompt.numel() + new_tokens or int(out.max()) >= vocab:
        raise RuntimeError(f"generate() returned {tuple(out.shape)} ids")
    return out[0, prompt.numel() :]
