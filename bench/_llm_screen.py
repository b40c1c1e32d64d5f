"""Screen one-shot settings on the development text (never the evaluation text).

    python bench/_llm_screen.py VARIANT[,bf16][@SEED]

The variant prunes SmolLM2-135M to 50 % with SparseGPT + OWL + block reconstruction (the settings
of bench/llm.py) with one change, then scores perplexity on the development range (bench/llm.py's
DEV_RANGE, 8192 tokens). ``@SEED`` is ``LLMPrune.seed`` (the order of the calibration sequences in
reconstruction and recovery: every block's moves by 1000 x SEED), to see the noise of one setting;
``,bf16`` runs the new steps' forward passes in bfloat16 (``train_dtype``). One variant per
process (run two at a time on two cores: nothing here is timed). Results append to
/tmp/netslim-llm-screen/results.jsonl. Used to choose ``SPARSITY_OFFSETS``; kept so that the
choice can be re-run (the figures are in bench/llm.py's comment on it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llm as bench  # noqa: E402

from netslim.llm import LLMPrune, prune_model  # noqa: E402
from netslim.llm.eval import perplexity  # noqa: E402

OUT = Path("/tmp/netslim-llm-screen")
BASE = dict(
    method="sparsegpt", sparsity=0.5, owl=bench.OWL_LAMBDA, owl_m=bench.OWL_M,
    reconstruct=bench.RECONSTRUCT_STEPS, reconstruct_batch=bench.RECONSTRUCT_BATCH,
    reconstruct_lr=bench.RECONSTRUCT_LR,
)  # fmt: skip
ATTENTION, MLP = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")
VARIANTS: dict[str, dict] = {
    "base": {},
    **{f"qk+{d}": {"sparsity_offsets": {"q_proj": d, "k_proj": d}} for d in (0.1, 0.15, 0.2, 0.25)},
    "qko+0.15": {"sparsity_offsets": {"q_proj": 0.15, "k_proj": 0.15, "o_proj": 0.15}},
    "attention+0.1": {"sparsity_offsets": dict.fromkeys(ATTENTION, 0.1)},
    "mlp+0.033": {"sparsity_offsets": dict.fromkeys(MLP, 0.0333)},
    "qk+0.15,gate/up+0.05,down-0.1": {
        "sparsity_offsets": {
            "q_proj": 0.15,
            "k_proj": 0.15,
            "gate_proj": 0.05,
            "up_proj": 0.05,
            "down_proj": -0.1,
        }
    },  # fmt: skip
    "qk+0.15,recover50": {"sparsity_offsets": {"q_proj": 0.15, "k_proj": 0.15}, "recover": 50},
    "qk+0.15,r96b1,lr7.5e-4": {
        "sparsity_offsets": {"q_proj": 0.15, "k_proj": 0.15},
        "reconstruct": 96,
        "reconstruct_batch": 1,
        "reconstruct_lr": 7.5e-4,
    },
    "qk+0.15,down-0.05": {"sparsity_offsets": {"q_proj": 0.15, "k_proj": 0.15, "down_proj": -0.05}},
    **{
        f"2:4,r{steps},lr{lr:g}": {
            "nm": (2, 4),
            "owl": 0.0,
            "reconstruct": steps,
            "reconstruct_lr": lr,
        }
        for steps in (12, 24, 36)
        for lr in (1.5e-3, 3e-3, 6e-3)
    },
    "2:4,bs32": {"nm": (2, 4), "owl": 0.0, "blocksize": 32},
    "2:4,damp0.1": {"nm": (2, 4), "owl": 0.0, "damp": 0.1},
    # the bench's settings (q/k offsets) with the same reconstruction cost (steps x batch = 48
    # sequences a block) in smaller batches
    **{
        f"qk+0.15,r{steps}b{batch},lr{lr:g}": {
            "sparsity_offsets": {"q_proj": 0.15, "k_proj": 0.15},
            "reconstruct": steps,
            "reconstruct_batch": batch,
            "reconstruct_lr": lr,
        }
        for steps, batch in ((24, 2), (48, 1))
        for lr in (7.5e-4, 1.5e-3)
    },
    # channel permutations before N:M pruning (bench/_nm_permute.py; function-preserving)
    **{
        f"2:4,perm:{'+'.join(spaces)}": {"nm": (2, 4), "owl": 0.0, "permute": set(spaces)}
        for spaces in (("mlp",), ("heads",), ("residual",), ("mlp", "heads", "residual"))
    },
}


def main() -> None:
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    name, _, seed = sys.argv[1].partition("@")
    path = bench.ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(path)
    calib = bench.token_sequences(tok, bench.kjv(bench.CALIB_RANGE), 256, 32)
    dev = tok(bench.kjv(bench.DEV_RANGE), return_tensors="pt", add_special_tokens=False)
    dev_ids = dev["input_ids"][0][: 8192 + 1]
    model = bench.load_model(path)
    bf16 = name.endswith(",bf16")  # the new steps' forward passes under bf16 autocast
    name = name.removesuffix(",bf16")
    settings = {**BASE, **VARIANTS[name], **({"train_dtype": "bfloat16"} if bf16 else {})}
    settings["seed"] = int(seed or 0)
    start = time.perf_counter()
    if "permute" in settings:
        from _nm_permute import permute

        permute(model, calib, settings.pop("permute"))
    report = prune_model(model, LLMPrune(**settings), calib)
    seconds = time.perf_counter() - start
    ppl = perplexity(model, dev_ids, seq_len=256, stride=256)["ppl"]
    row = {
        "variant": sys.argv[1],
        "dev_ppl": ppl,
        "sparsity": report["sparsity"],
        "seconds": seconds,
    }
    print(json.dumps(row), flush=True)
    OUT.mkdir(exist_ok=True)
    with (OUT / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
