"""Width pruning of LLaMA-family blocks: FFN neurons and attention heads (GQA groups whole).

Scoring is structured Wanda (Sun et al., 2023, applied per unit as in An et al., 2024, FLAP):
a unit's score is Σ over the channels it writes into the output projection of
``‖X_c‖₂ · ‖W_out[:, c]‖₂`` — how much it actually contributes on calibration data. With GQA a
KV head is shared by ``heads/kv_heads`` query heads, so the unit is the whole group (one KV
head and its query heads); removing a lone query head would leave the layout inconsistent.

Optional (off by default: it overfits small calibration sets) least-squares correction refits the output projection on the kept channels so the
block output moves least: ``W'_K = W Σ[:, K] (Σ[K, K] + λI)⁻¹`` with ``Σ = XᵀX`` — the
normal equations of ``min ‖X Wᵀ − X_K W'_Kᵀ‖²`` (as in Kwon et al., 2022, "A Fast
Post-Training Pruning Framework for Transformers").

During calibration the removed units are only zeroed (exactly equivalent for the next block);
the physical removal at the end is done by the structural engine (``netslim.structural``),
which slices every tensor of the unit's channel group and updates the HF config when all
layers agree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from netslim.errors import UnsupportedModelError
from netslim.llm.arch import Family, block_linears, family, layers, set_weight_oi, weight_oi
from netslim.llm.calibration import BlockInputs, LayerStats, collecting, run_block
from netslim.llm.config import LLMPrune

FFN_OUT = "mlp.down_proj"
ATTN_OUT = "self_attn.o_proj"


def check_width_supported(model: nn.Module) -> Family:
    fam = family(model)
    block = layers(model, fam)[0]
    if not fam.llama_like or not {FFN_OUT, ATTN_OUT} <= set(block_linears(block)):
        raise UnsupportedModelError(
            f"width pruning supports LLaMA-family blocks (mlp.down_proj, self_attn.o_proj); "
            f"{type(model).__name__} has another layout"
        )
    return fam


def head_dim_of(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def keep_count(size: int, ratio: float) -> int:
    """Units kept when removing ``ratio`` of ``size`` (at least one)."""
    return max(1, round(size * (1.0 - ratio)))


def refit(weight: Tensor, stats: LayerStats, keep: Tensor, damp: float) -> Tensor:
    """Least-squares output projection on the kept input channels (removed columns zero)."""
    gram = stats.gram
    assert gram is not None
    sub = gram[keep][:, keep].clone()
    sub.diagonal().add_(damp * float(sub.diagonal().mean()) + 1e-12)
    rhs = weight.double() @ gram[:, keep]  # (out, k)
    fitted = torch.linalg.solve(sub, rhs.t()).t()
    out = torch.zeros_like(weight)
    out[:, keep] = fitted.to(weight.dtype)
    return out


def _prune_out_proj(
    module: nn.Module, stats: LayerStats, keep: Tensor, correct: bool, damp: float
) -> None:
    weight = weight_oi(module).detach().float()
    if correct:
        new = refit(weight, stats, keep, damp)
    else:
        new = torch.zeros_like(weight)
        new[:, keep] = weight[:, keep]
    set_weight_oi(module, new)


class WidthStep:
    """Chooses kept FFN neurons and KV groups per block, zeroes the rest (and refits)."""

    def __init__(self, config: LLMPrune, model_config: Any):
        self.config = config
        self.head_dim = head_dim_of(model_config)
        self.ffn_keep: list[list[int]] = []
        self.kv_keep: list[list[int]] = []
        self.sizes: list[dict[str, int]] = []

    def __call__(self, index: int, block: nn.Module, inputs: BlockInputs | None) -> Tensor | None:
        assert inputs is not None
        cfg = self.config
        need = {"sq", "gram"} if cfg.correct else {"sq"}
        with collecting(block, {FFN_OUT: need, ATTN_OUT: need}) as stats:
            run_block(block, inputs)
        linears = block_linears(block)
        attn = block.get_submodule("self_attn")
        hd = self.head_dim
        heads = weight_oi(attn.q_proj).shape[0] // hd
        kv = weight_oi(attn.k_proj).shape[0] // hd

        down = linears[FFN_OUT]
        w = weight_oi(down).detach().float()
        ratio = cfg.layer_sparsity[index] if cfg.layer_sparsity else cfg.sparsity
        score = stats[FFN_OUT].norms * w.norm(dim=0)
        ffn = torch.topk(score, keep_count(w.shape[1], ratio)).indices.sort().values
        _prune_out_proj(down, stats[FFN_OUT], ffn, cfg.correct, cfg.damp)

        o = linears[ATTN_OUT]
        wo = weight_oi(o).detach().float()
        per_channel = stats[ATTN_OUT].norms * wo.norm(dim=0)  # (heads * hd,)
        group_scores = per_channel.view(kv, (heads // kv) * hd).sum(dim=1)
        groups = torch.topk(group_scores, keep_count(kv, cfg.heads)).indices.sort().values
        width = (heads // kv) * hd
        channels = (
            groups[:, None] * width + torch.arange(width, device=groups.device)[None, :]
        ).flatten()
        _prune_out_proj(o, stats[ATTN_OUT], channels, cfg.correct, cfg.damp)

        self.ffn_keep.append(ffn.tolist())
        self.kv_keep.append(groups.tolist())
        self.sizes.append({"ffn": w.shape[1], "kv_heads": kv, "heads": heads})
        return None


def _group_for(groups: list[Any], module: str, size: int) -> Any:
    for g in groups:
        if g.size == size and not g.within and module in {m.module for m in g.members}:
            return g
    return None


def _index_map(group: Any, module: str, stride: int, count: int) -> list[int]:
    """Engine group index of our unit ``u`` (read from the member's index at row ``u*stride``)."""
    for member in group.members:
        if member.module == module and member.dim == 0:
            return [int(member.index[u * stride]) for u in range(count)]
    raise UnsupportedModelError(f"structural engine: {module} is not in the expected group")


def apply_width(model: nn.Module, step: WidthStep, example_ids: Tensor) -> dict[str, Any]:
    """Remove the zeroed units physically with ``netslim.structural`` (one plan for all blocks)."""
    from netslim.structural import PruningPlan, apply_plan
    from netslim.structural import groups as find_groups

    fam = family(model)
    found = find_groups(model, (example_ids,))
    plan = PruningPlan()
    for i, (ffn, kv, sizes) in enumerate(zip(step.ffn_keep, step.kv_keep, step.sizes, strict=True)):
        base = f"{fam.prefix}.{i}"
        for unit, keep, size, stride in (
            ("mlp.gate_proj", ffn, sizes["ffn"], 1),
            ("self_attn.k_proj", kv, sizes["kv_heads"], step.head_dim),
        ):
            if len(keep) == size:
                continue
            group = _group_for(found, f"{base}.{unit}", size)
            if group is None:
                raise UnsupportedModelError(
                    f"structural engine found no group of {size} units for {base}.{unit}"
                )
            mapping = _index_map(group, f"{base}.{unit}", stride, size)
            plan.keep[group.id] = sorted(mapping[u] for u in keep)
            plan.sizes[group.id] = group.size
    report = apply_plan(model, plan, (example_ids,)) if plan.keep else {}
    return {"groups_pruned": len(plan.keep), "engine_notes": report.get("notes", [])}


def layer_widths(model: nn.Module) -> list[dict[str, int]]:
    """Actual per-block sizes after pruning (from the weights, not the config)."""
    out = []
    for block in layers(model):
        attn = block.self_attn
        hd = head_dim_of(model.config)
        out.append(
            {
                "intermediate_size": weight_oi(block.mlp.down_proj).shape[1],
                "num_attention_heads": weight_oi(attn.q_proj).shape[0] // hd,
                "num_key_value_heads": weight_oi(attn.k_proj).shape[0] // hd,
            }
        )
    return out


def sync_config(model: nn.Module) -> bool:
    """Write uniform widths into the config; returns False when the blocks differ."""
    widths = layer_widths(model)
    cfg = model.config
    cfg.head_dim = head_dim_of(cfg)  # explicit, so fewer heads do not change it on reload
    if any(w != widths[0] for w in widths):
        return False
    for key, value in widths[0].items():
        setattr(cfg, key, value)
    return True
