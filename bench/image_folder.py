"""``--data DIR`` on an image folder: Fashion-MNIST exported to PNG class folders, pruned end to end.

    .venv/bin/python bench/image_folder.py [--quick] [--root DIR] [--limit-train N]

1. Exports the Debian package's Fashion-MNIST IDX files to ``ROOT/train/<class>/<i>.png`` and
   ``ROOT/val/<class>/<i>.png`` (60,000 + 10,000 greyscale 28x28 PNGs; skipped when present).
2. Runs the command of the bar, ``netslim prune zoo:vgg_small --method channel --ratio 0.5
   --data ROOT`` (with the training budget below), which reports accuracy on the val/ split.
3. Runs the same command on the built-in IDX loader (``--data fashion-mnist``): the same
   images, a class-balanced training subset of the same size (the folder lists images class by
   class, so the seeded pick is not the same images), the same val/test split; the accuracies
   should agree within run-to-run noise.

Writes docs/image_folder.md and docs/results/image_folder.json. ``--quick`` exports 600 images
and trains for a few steps to check the script; it writes nothing under docs/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOCS, ROOT, machine_line, markdown_table, write_results  # noqa: E402

from netslim.data.fashion import FASHION_MNIST_DIR, load_idx_split  # noqa: E402

CLASSES = (
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)


def export_pngs(root: Path, per_split: int | None) -> dict[str, int]:
    """Write the IDX splits as PNG class folders (train/ and val/); returns images per split."""
    from PIL import Image

    counts = {}
    for split, folder in (("train", "train"), ("test", "val")):
        images, labels = load_idx_split(FASHION_MNIST_DIR, split)
        n = len(labels) if per_split is None else per_split
        done = root / folder / ".complete"
        if done.exists() and int(done.read_text()) == n:
            counts[folder] = n
            continue
        for name in CLASSES:
            (root / folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.asarray(images[i]), "L").save(
                root / folder / CLASSES[labels[i]] / f"{i:05d}.png"
            )
        done.write_text(str(n))
        counts[folder] = n
    return counts


def run_prune(data: str, out: Path, budget: list[str]) -> dict:
    command = [
        sys.executable,
        "-m",
        "netslim",
        "prune",
        "zoo:vgg_small",
        "--method",
        "channel",
        "--ratio",
        "0.5",
        "--data",
        data,
        *budget,
        "--no-progress",
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    shown = ["netslim", *command[3:]]
    return {"command": " ".join(shown), "stdout": done.stdout, "seconds": seconds, "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", type=Path, default=Path("/tmp/netslim-fashion-png"))
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/netslim-image-folder-runs"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the doc from docs/results/image_folder.json",
    )
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((DOCS / "results" / "image_folder.json").read_text())
        write_doc(
            saved["runs"],
            saved["budget"],
            saved["export_seconds"],
            saved["counts"],
            saved["machine"],
            args.limit_train,
        )
        return

    per_split = 60 if args.quick else None
    root = args.root / ("quick" if args.quick else "full")
    started = time.perf_counter()
    counts = export_pngs(root, per_split)
    export_s = time.perf_counter() - started
    print(f"exported {counts} PNGs to {root} in {export_s:.0f} s", flush=True)
    budget = (
        ["--epochs", "1", "--finetune-epochs", "1", "--batch-size", "16", "--no-latency"]
        if args.quick
        else ["--epochs", "2", "--finetune-epochs", "1", "--limit-train", str(args.limit_train)]
    )
    runs = {}
    for label, data in (("image folder", str(root)), ("built-in IDX", "fashion-mnist")):
        if args.quick and label != "image folder":
            continue
        runs[label] = run_prune(data, args.out / label.replace(" ", "-"), budget)
        print(runs[label]["stdout"], flush=True)
    if args.quick:
        return
    write_results(
        "image_folder",
        {
            "budget": budget,
            "export_seconds": export_s,
            "counts": counts,
            "runs": runs,
            "machine": machine_line(),
        },
    )
    write_doc(runs, budget, export_s, counts, machine_line(), args.limit_train)


def write_doc(
    runs: dict, budget: list[str], export_s: float, counts: dict, machine: str, limit_train: int
) -> None:
    rows = []
    for label, run in runs.items():
        r = run["report"]
        rows.append(
            [
                label,
                r["data"].get("train_samples", limit_train),
                r["data"].get("test_samples", 10000),
                f"{100 * r['accuracy_before']:.2f}",
                f"{100 * r['accuracy_after']:.2f}",
                f"{r['macs_before'] / r['macs_after']:.2f}x",
                f"{r['params_before'] / r['params_after']:.2f}x",
            ]
        )
    folder = runs["image folder"]
    text = f"""# `--data DIR`: an image folder, end to end

Generated by `python bench/image_folder.py` ({machine}).

Fashion-MNIST's 60,000 training and 10,000 test images were exported as greyscale PNGs to
`train/<class>/` and `val/<class>/`, then pruned with the command of the bar:

    {folder["command"]}

netslim read the tree (10 class folders, sorted names = labels), built `zoo:vgg_small` for 10
classes and 1 channel, preprocessed the images as described in report.json's `data` field
(`{folder["report"]["data"]["preprocessing"]}`), trained, removed half of the channels
(global L2 ranking), fine-tuned and scored the model on the **val/** split. The second row runs
the same command with `--data fashion-mnist` (the built-in IDX loader: the same pixels, a
class-balanced training subset of the same size, fixed normalisation constants) as the
reference.

{markdown_table(["data", "train images", "val images", "acc before (%)", "acc after (%)", "MACs", "params"], rows)}

Budget (both rows): `{" ".join(budget)}`. The folder run decodes each PNG it uses once
(the training subset and the {counts["val"]:,} val images) and trains on the preprocessed
tensors. No timings here: the runs shared a 2-core machine with other jobs.

The command's own output for the image folder:

```
{folder["stdout"].strip(chr(10))}
```
"""
    (DOCS / "image_folder.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
