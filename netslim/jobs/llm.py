"""The ``netslim llm`` job: check every input, calibrate, prune (in memory or streamed from
shards), measure perplexity and save in the Hugging Face layout; the output directory only
appears once complete."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from netslim.errors import ConfigError, DataError, NetslimWarning, UnsupportedModelError


def _tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise UnsupportedModelError(f"{model_dir} has no usable tokenizer: {exc}") from exc


def _check_windows(context: int | None, seq_len: int, stride: int | None, where: str) -> None:
    """The calibration and evaluation windows fit the model and each other, before any work:
    a stride past the window leaves tokens unscored (with --stream that error came after the
    whole model was pruned and written), and a window past the model's ``context`` (as ``where``
    declares it) calibrates and scores positions it never saw (GPT-2's learned positions end in
    an index error)."""
    if isinstance(context, int) and seq_len > context:
        raise ConfigError(
            f"--seq-len {seq_len} is longer than the model's context ({context} positions, {where})"
        )
    if stride is not None and stride > seq_len:
        raise ConfigError(
            f"--stride {stride} is longer than the window (--seq-len {seq_len}): the tokens "
            "between windows would not be scored"
        )


def _check_vocab(hf_config: Any, model_dir: str, *ids: Any) -> None:
    """The tokenizer's ids fit the model's embedding: a tokenizer from another model would
    otherwise end in an index error inside the first forward."""
    vocab = getattr(hf_config, "vocab_size", None)
    tops = [int(t.max()) for t in ids if t is not None and t.numel()]
    if vocab is not None and tops and max(tops) >= vocab:
        raise ConfigError(
            f"the tokenizer in {model_dir} gives token id {max(tops)}, but the model's vocabulary "
            f"has {vocab} entries: the tokenizer is not this model's"
        )


def llm_job(model_dir: str, config: Any, *, out: str, **inputs: Any) -> dict[str, Any]:
    """Prune the Hugging Face model in ``model_dir`` as ``config`` (``LLMWeights``, ``LLMWidth`` or
    ``LLMDepth``) says, through ``netslim.prune_`` (streamed: block by block from the shards),
    measure perplexity on ``eval_text`` and write the result to ``out``; returns the report.
    ``model_dir`` may also be a GGUF file (or a folder holding one): it is first dequantized to a
    float32 Hugging Face folder beside ``out``, removed afterwards. ``inputs``: the keywords of
    :func:`_job` (calib, eval_text, seq_len, stride, calib_samples, eval_tokens, stream)."""
    from netslim.llm import io
    from netslim.llm.gguf import from_gguf, gguf_context, gguf_source

    io.check_writable(out)
    gguf = gguf_source(model_dir)
    if gguf is None:
        return _job(model_dir, config, out=out, **inputs)
    where = "context_length in the GGUF header"
    _check_windows(gguf_context(gguf), inputs["seq_len"], inputs["stride"], where)
    parent = Path(out).resolve().parent  # the float32 copy beside the output, not in /tmp
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".netslim-gguf-", dir=parent) as tmp:
        start = time.perf_counter()
        model_dir = str(from_gguf(gguf, Path(tmp) / "model"))
        seconds = time.perf_counter() - start
        report = _job(model_dir, config, out=out, **inputs)
    report["source"] = {"gguf": str(gguf), "dtype": "float32", "seconds": seconds}
    io.write_manifest(Path(out), report)
    return report


def _job(
    model_dir: str,
    config: Any,
    *,
    out: str,
    calib: str | None,
    eval_text: str | None,
    seq_len: int,
    stride: int | None,
    calib_samples: int,
    eval_tokens: int,
    stream: bool,
) -> dict[str, Any]:
    import torch

    from netslim.api import prune_
    from netslim.llm import io
    from netslim.llm.calibration import read_text, token_sequences
    from netslim.llm.eval import generate_check, perplexity
    from netslim.llm.prune import calibration_user, needs_calibration
    from netslim.llm.streaming import prune_streaming
    from netslim.methods import preflight

    hf_config = io.check_model_dir(model_dir)
    context = getattr(hf_config, "max_position_embeddings", None)
    _check_windows(context, seq_len, stride, "max_position_embeddings in its config.json")
    tokenizer = _tokenizer(model_dir)
    calib_ids = None
    if needs_calibration(config):
        if not calib:
            raise ConfigError(f"{calibration_user(config)} needs --calib FILE (calibration text)")
        calib_ids = token_sequences(tokenizer, read_text(calib), seq_len, calib_samples)
        if calib_ids.shape[0] < calib_samples:  # all the text has: calibrate, but say so
            warnings.warn(
                f"{calib} gives {calib_ids.shape[0]} windows of {seq_len} tokens, fewer than "
                f"--calib-samples {calib_samples}: calibrating on all of them",
                NetslimWarning,
                stacklevel=2,
            )
    recovery_ids = None
    if getattr(config, "recover", 0) and calib:  # distillation reads every window of the text
        recovery_ids = token_sequences(tokenizer, read_text(calib), seq_len)
    eval_ids = None
    if eval_text:
        eval_ids = tokenizer(read_text(eval_text), return_tensors="pt", add_special_tokens=False)[
            "input_ids"
        ][0]
        eval_ids = eval_ids[:eval_tokens]
        if eval_ids.numel() < 2:
            raise DataError(f"{eval_text} has fewer than 2 tokens")
    _check_vocab(hf_config, model_dir, calib_ids, recovery_ids, eval_ids)

    def ppl(model: Any) -> dict[str, Any]:
        return perplexity(model, eval_ids, seq_len=seq_len, stride=stride)

    dense = None
    if stream:
        report = prune_streaming(model_dir, out, config, calib_ids)
        if eval_ids is not None:
            pruned = io.load(out, dtype=torch.float32)
            report["perplexity"] = {"pruned": ppl(pruned)}
            report["generate_ok"] = bool(generate_check(pruned, eval_ids[:8]).numel())
            io.write_manifest(Path(out), report)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        preflight("llm", model, config, calib_ids)  # bad settings fail before the dense pass
        if eval_ids is not None:
            dense = ppl(model)
        report = prune_(model, config, calibration=calib_ids, recovery=recovery_ids)
        if eval_ids is not None:
            report["perplexity"] = {"dense": dense, "pruned": ppl(model)}
            report["generate_ok"] = bool(generate_check(model, eval_ids[:8]).numel())
        io.save(model, out, report, tokenizer)
    return report
