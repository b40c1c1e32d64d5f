"""Screening only: function-preserving channel permutations of a LLaMA model before N:M pruning.

N:M groups run over a linear's *input* channels in storage order, so which channels share a
group is an accident of training. Permuting channels where the function allows it (and every
reader and writer of them with it) lets each group of M mix strong and weak channels, so the
N kept per group lose less (Pool & Yu, "Channel Permutations for N:M Sparsity", 2021; here
with a one-shot "snake" deal instead of their search). Three spaces can move:

- ``mlp``: a block's intermediate channels (gate/up rows, down_proj columns);
- ``heads``: the head dimension of each KV head (v_proj rows, and the o_proj columns of every
  query head that reads that KV head, with one permutation);
- ``residual``: the residual stream, once for the whole model (embeddings and the tied head,
  every RMSNorm weight, q/k/v/gate/up columns, o_proj/down_proj rows).

Saliency of an input channel j of a linear: ‖W[:, j]‖² · E[x_j²] on the calibration text,
summed over the linears that share the space. Used by bench/_llm_screen.py; not part of netslim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from netslim.llm.arch import layers


def snake(saliency: Tensor, m: int) -> Tensor:
    """A permutation dealing channels sorted by saliency into groups of ``m`` so that every
    group gets ranks spread over the whole range: group g takes ranks g, 2G-1-g, 2G+g, ..."""
    n = saliency.numel()
    groups = n // m
    order = torch.argsort(saliency, descending=True)
    perm = torch.empty(n, dtype=torch.long)
    for g in range(groups):
        picks = []
        for k in range(m):
            rank = k * groups + (g if k % 2 == 0 else groups - 1 - g)
            picks.append(order[rank])
        perm[g * m : (g + 1) * m] = torch.stack(picks)
    return perm


@torch.no_grad()
def input_energy(model: nn.Module, calib: Tensor) -> dict[str, Tensor]:
    """E[x_j²] of the inputs of every q_proj, gate_proj, o_proj and down_proj (dense model)."""
    sums: dict[str, Tensor] = {}
    handles = []
    for i, block in enumerate(layers(model)):
        for name in ("self_attn.q_proj", "mlp.gate_proj", "self_attn.o_proj", "mlp.down_proj"):
            mod = block.get_submodule(name)

            def hook(_m, args, _o, key=f"{i}.{name}"):
                x = args[0].detach().float().reshape(-1, args[0].shape[-1])
                sums[key] = sums.get(key, 0) + (x * x).sum(0)

            handles.append(mod.register_forward_hook(hook))
    try:
        for row in calib:
            model(row[None])
    finally:
        for h in handles:
            h.remove()
    return sums


def _col(w: Tensor) -> Tensor:
    return (w.float() ** 2).sum(0)


@torch.no_grad()
def permute(model: nn.Module, calib: Tensor, spaces: set[str], m: int = 4) -> None:
    energy = input_energy(model, calib)
    blocks = layers(model)
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_kv = cfg.num_attention_heads // cfg.num_key_value_heads
    for i, block in enumerate(blocks):
        att, mlp = block.self_attn, block.mlp
        if "mlp" in spaces:
            s = _col(mlp.down_proj.weight) * energy[f"{i}.mlp.down_proj"]
            p = snake(s, m)
            mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[p])
            mlp.up_proj.weight.copy_(mlp.up_proj.weight[p])
            mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, p])
        if "heads" in spaces:
            s_o = _col(att.o_proj.weight) * energy[f"{i}.self_attn.o_proj"]
            cols = torch.arange(cfg.hidden_size)
            v_rows = torch.arange(att.v_proj.weight.shape[0])
            for kv in range(cfg.num_key_value_heads):
                heads = range(kv * per_kv, (kv + 1) * per_kv)
                s = sum(s_o[h * head_dim : (h + 1) * head_dim] for h in heads)
                p = snake(s, m)
                v_rows[kv * head_dim : (kv + 1) * head_dim] = kv * head_dim + p
                for h in heads:
                    cols[h * head_dim : (h + 1) * head_dim] = h * head_dim + p
            att.v_proj.weight.copy_(att.v_proj.weight[v_rows])
            if att.v_proj.bias is not None:
                att.v_proj.bias.copy_(att.v_proj.bias[v_rows])
            att.o_proj.weight.copy_(att.o_proj.weight[:, cols])
    if "residual" in spaces:
        s = torch.zeros(cfg.hidden_size)
        for i, block in enumerate(blocks):
            att, mlp = block.self_attn, block.mlp
            e_q, e_g = energy[f"{i}.self_attn.q_proj"], energy[f"{i}.mlp.gate_proj"]
            s += sum(_col(lin.weight) for lin in (att.q_proj, att.k_proj, att.v_proj)) * e_q
            s += sum(_col(lin.weight) for lin in (mlp.gate_proj, mlp.up_proj)) * e_g
        p = snake(s, m)
        emb = model.get_input_embeddings()
        emb.weight.copy_(emb.weight[:, p])
        head = model.get_output_embeddings()
        if head is not None and head.weight is not emb.weight:
            head.weight.copy_(head.weight[:, p])
        model.model.norm.weight.copy_(model.model.norm.weight[p])
        for block in blocks:
            att, mlp = block.self_attn, block.mlp
            for norm in (block.input_layernorm, block.post_attention_layernorm):
                norm.weight.copy_(norm.weight[p])
            for lin in (att.q_proj, att.k_proj, att.v_proj, mlp.gate_proj, mlp.up_proj):
                lin.weight.copy_(lin.weight[:, p])
            for lin in (att.o_proj, mlp.down_proj):
                lin.weight.copy_(lin.weight[p])
                if lin.bias is not None:
                    lin.bias.copy_(lin.bias[p])
