"""docs/coverage.md from docs/results/coverage.json (separate so slices can be re-reported)."""

from __future__ import annotations

import statistics
from typing import Any

from _common import DOCS, markdown_table
from _coverage_added import ADDED

FAMILIES = (
    "torchvision_cls", "torchvision_seg", "torchvision_det", "timm", "hf",
    "yolo", "diffusers", "open_clip", "sam",
)  # fmt: skip
NS_STATUS = ("ok", "mismatch", "fail_trace", "fail_prune", "fail_other", "timeout")
TP_STATUS = ("ok", "shape_mismatch", "fail_build", "fail_prune", "fail_forward", "fail_other",
             "timeout")  # fmt: skip


def _m(v: Any, scale: float) -> str:
    return f"{v / scale:.2f}" if isinstance(v, (int, float)) else "?"


def _kept(r: dict[str, Any], key: str) -> str:
    b, a = r.get(f"{key}_before"), r.get(f"{key}_after")
    return f"{a / b:.2f}" if isinstance(a, (int, float)) and b else ""


def _counts(rows: dict[str, dict], tool: str, statuses: tuple[str, ...]) -> list[list[Any]]:
    out = []
    total_row = [0] * (len(statuses) + 1)
    for fam in FAMILIES:
        rs = [v[tool] for k, v in rows.items() if k.startswith(fam + "/") and tool in v]
        if not rs:
            continue
        line = [len(rs)] + [sum(r["status"] == s for r in rs) for s in statuses]
        if tool == "tp":
            line.append(sum(bool(r.get("manual_fixups")) for r in rs if r["status"] == "ok"))
        out.append([fam, *line])
        total_row = [a + b for a, b in zip(total_row, line, strict=False)]
    if tool == "tp":
        total_row.append(sum(r[-1] for r in out))
    out.append(["**all**", *total_row])
    return out


def _side_by_side(rows: dict[str, dict]) -> list[str]:
    """Models both tools ran, split by who succeeded (netslim ok = equivalent; TP ok = runs)."""
    both = {k: v for k, v in rows.items() if "netslim" in v and "tp" in v}
    cells: dict[tuple[bool, bool], list[str]] = {}
    for k, v in both.items():
        key = (v["netslim"]["status"] == "ok", v["tp"]["status"] == "ok")
        cells.setdefault(key, []).append(k)

    def names(key: tuple[bool, bool]) -> str:
        found = cells.get(key, [])
        return f"{len(found)}" + (f": {', '.join(found)}" if found and len(found) <= 40 else "")

    return [
        f"## Side by side ({len(both)} models run by both tools)",
        "",
        f"- both ok: {len(cells.get((True, True), []))}",
        f"- netslim ok, Torch-Pruning not: {names((True, False))}",
        f"- Torch-Pruning ok, netslim not: {names((False, True))}",
        f"- neither: {names((False, False))}",
        "",
    ]


def _added(rows: dict[str, dict]) -> list[str]:
    """The models added for issue #18 (what people bring), both tools side by side."""
    added = {k: v for k, v in rows.items() if k in ADDED}
    if not added:
        return []
    table = []
    for tool, statuses in (("netslim", NS_STATUS), ("tp", TP_STATUS)):
        rs = [v[tool] for v in added.values() if tool in v]
        counts = {s: sum(r["status"] == s for r in rs) for s in statuses}
        detail = ", ".join(f"{s} {n}" for s, n in counts.items() if n and s != "ok")
        table.append(
            ["netslim (equivalent)" if tool == "netslim" else "Torch-Pruning (runs)",
             len(rs), counts["ok"], detail or "-"]
        )  # fmt: skip
    silent = [k for k, v in added.items() if v.get("netslim", {}).get("status") == "mismatch"]
    return [
        f"## Models people bring ({len(added)} added for issue #18)",
        "",
        "Ultralytics YOLO v8n/11n (detect, segment, pose, classify, OBB; 1×3×160×160, from "
        "the yaml, never run before pruning), diffusers UNet2DConditionModel (blocks 32/64, "
        "cross-attention 32, 1×4×16×16 latents + 8 context tokens) and AutoencoderKL (blocks "
        "32/64, 1×3×32×32), open_clip ViT-S-32 (image 224 + 77 text tokens), segment-anything's "
        "ImageEncoderViT (256 px, width 192, 4 blocks, windowed + global attention, relative "
        "positions), Hugging Face Whisper encoder (d_model 256, 4 layers, 80×200 mel), T5 "
        "encoder (d_model 256, 4 layers, 32 tokens), DETR (ResNet-18-like backbone, d_model "
        "128, 2+2 layers, 128 px), ConvNeXt V2 (depths 1/1/2/1, 128 px), Mamba (hidden 256, "
        "4 layers, 32 tokens), timm EfficientNetV2 (rw_t, tf_b0) and MobileNetV4 (conv / "
        "hybrid medium). All random weights, built offline from configs (`bench/_coverage_added.py`); "
        "reproduce with `.venv/bin/python bench/coverage.py --added`.",
        "",
        markdown_table(["tool", "models", "ok", "other outcomes"], table),
        "",
        f"**Silent mismatches among them: {len(silent)}**"
        + (f" ({', '.join(silent)})" if silent else ""),
        "",
    ]


def write_report(db: dict[str, Any]) -> str:
    rows = dict(sorted(db["results"].items()))
    meta = db.get("meta", {})
    ns_ok = [v["netslim"] for v in rows.values() if v.get("netslim", {}).get("status") == "ok"]
    silent = [k for k, v in rows.items() if v.get("netslim", {}).get("status") == "mismatch"]
    times = [r["prune_seconds"] for r in ns_ok if "prune_seconds" in r]
    lines = [
        "# Structural pruning coverage: netslim vs Torch-Pruning 1.6.1",
        "",
        f"{meta.get('machine', '')}; one subprocess per (model, tool), "
        f"{meta.get('timeout_s', 180):.0f} s limit and {meta.get('jobs', 1)} at a time in the "
        "last slice run (timings are only indicative; `structural_speed.md` times tools on a "
        "quiet machine), random init, eval mode, BatchNorm running "
        "statistics randomised and all-zero Linear/Conv weights (torchvision ViT heads, some timm "
        "heads) re-drawn small, so the equivalence check is never vacuous (same seed for both "
        "tools). Written by `bench/coverage.py`.",
        "",
        "- netslim: `Channels(ratio=0.5)`; model outputs (so classifiers) are kept by the engine. "
        "**ok** means the pruned model is *equivalent* to `masked_reference` (the original "
        "with the removed channels zeroed) on fresh inputs of the traced shape: max abs diff "
        f"≤ {ABS} or, for outputs of large magnitude, max abs diff / max |reference| ≤ {REL} "
        "(the `tol` column says which). **mismatch** would be a silent wrong output. "
        "Detection models are compared on their dense head's raw outputs (RPN head or "
        "SSD/RetinaNet/FCOS head, before NMS): with random weights many scores tie, and which "
        "tied box NMS keeps flips on float noise.",
        "- Torch-Pruning: `BasePruner(GroupMagnitudeImportance(p=2), pruning_ratio=0.5)`, heads "
        "ignored and `num_heads` passed as in the anchor file's method notes (detection: whole "
        "heads/RPN/RoI heads ignored by module name). **ok** means only that the pruned forward "
        "runs with the same output shapes, as in the anchor; `fix-ups` = the example-style "
        "attribute fix-ups were needed.",
        "- Inputs: torchvision classification/segmentation 1×3×160×160 (224 where 160 fails, "
        "e.g. ViT, MaxViT); detection one 3×320×320 image with `min_size=max_size=320` (SSD "
        "300/320 at their fixed size); timm at each model's default `input_size`; HF text "
        "models 1×32 tokens, vision 1×3×224×224.",
        "- HF configs (random weights): text models hidden 256, 4 layers, 8 heads (LLaMA, "
        "Mistral, Qwen2: 2 KV heads, i.e. GQA), intermediate 1024, vocab 8000; GPT-2 n_embd 256, "
        "4 layers, 8 heads; ViT as the text sizes at 224 px; Swin, ConvNeXt, ResNet, "
        "MobileNetV2 at their default configs.",
        "- MACs: `netslim.measure.count_macs` (torch FlopCounter, functional attention "
        "included) for both tools. Peak RSS: the worker's `ru_maxrss` (netslim's includes the "
        "original copy and the masked reference used for the check; `prune extra MB` is the "
        "RSS growth during `prune` alone).",
        "",
        "Reproduce: `make bench-coverage` (every model, both tools, one at a time; the first "
        "148 took about 2 h on 2 cores, of which netslim 25 min; `--jobs 2` halves it when memory allows, but "
        "Torch-Pruning alone reaches 23 GB on Swin V2), or in slices, e.g. "
        "`.venv/bin/python bench/coverage.py --family timm --resume`; `--models a,b`, "
        "`--added` (the models added for issue #18), `--tools netslim`, `--report-only`.",
        "",
        "## netslim counts per family",
        "",
        markdown_table(["family", "total", *NS_STATUS], _counts(rows, "netslim", NS_STATUS)),
        "",
        f"**Silent mismatches: {len(silent)}**"
        + (
            f" ({', '.join(silent)})"
            if silent
            else " — every model netslim pruned is equivalent to its masked original."
        ),  # fmt: skip
        "",
    ]
    if times:
        lines += [
            f"netslim prune seconds (trace + plan + apply + validation, ok models, "
            f"n={len(times)}): median {statistics.median(times):.2f} s, max {max(times):.2f} s",
            "",
        ]
    lines += [
        "## Torch-Pruning counts per family (this run)",
        "",
        markdown_table(
            ["family", "total", *TP_STATUS, "ok needing fix-ups"], _counts(rows, "tp", TP_STATUS)
        ),
        "",
        *_side_by_side(rows),
        *_added(rows),
        "## Failures, mismatches and timeouts",
        "",
    ]
    fails = []
    for k, v in rows.items():
        for tool in ("netslim", "tp"):
            r = v.get(tool)
            if r and r["status"] != "ok":
                fails.append([k, tool, r["status"], r.get("error", "").replace("|", "/")[:300]])
    lines += [markdown_table(["model", "tool", "status", "error"], fails) if fails else "none", ""]
    table = []
    for k, v in rows.items():
        ns, tp = v.get("netslim", {}), v.get("tp", {})
        table.append([
            k, ns.get("status", ""), _m(ns.get("params_before"), 1e6) + "→"
            + _m(ns.get("params_after"), 1e6), _kept(ns, "macs"),
            f"{ns['max_abs_diff']:.1e}" if "max_abs_diff" in ns else "", ns.get("tolerance", ""),
            ns.get("prune_seconds", ""), ns.get("peak_rss_mb", ""),
            ns.get("prune_extra_rss_mb", ""), ns.get("boundaries", ""),
            tp.get("status", ""), _kept(tp, "macs"), tp.get("prune_seconds", ""),
            tp.get("peak_rss_mb", ""),
            "" if "manual_fixups" not in tp else ("yes" if tp["manual_fixups"] else "no"),
        ])  # fmt: skip
    lines += [
        "## Per-model results",
        "",
        "`MACs kept` = after / before. `bounds` = boundaries the engine reported (channels it "
        "kept because an op could not be expressed).",
        "",
        markdown_table(
            [
                "model",
                "netslim",
                "params M",
                "MACs kept",
                "max abs diff",
                "tol",
                "prune s",
                "peak RSS MB",
                "prune extra MB",
                "bounds",
                "TP",
                "TP MACs kept",
                "TP prune s",
                "TP peak RSS MB",
                "TP fix-ups",
            ],
            table,
        ),  # fmt: skip
        "",
    ]
    path = DOCS / "coverage.md"
    path.write_text("\n".join(lines))
    return f"wrote {path} ({len(rows)} models)"


ABS = "1e-5"
REL = "1e-5"
