"""Fused MoE on CPU: tokens grouped by expert, int4 experts through torch's CPU int4pack matmul.

torch's `_weight_int4pack_mm_for_cpu` dequantizes inside its GEMM, reading a quarter of bf16's bytes, so
it wins where the matmul is bound by memory (few tokens per expert). Its cost grows with the token
count (it re-dequantizes every block of 4 rows), so an expert with at least `DEQUANT_MIN_TOKENS` tokens
is dequantized once and multiplied in bf16 (oneDNN) instead. Activations run in bf16: the int4 op with
fp32 activations is tens of times slower.
"""

import os

import torch
import torch.nn.functional as F

from inference.kernels.experts import DenseExperts, Experts, Int4Experts

# Tokens per expert from which dequantize + bf16 GEMM beats the int4 op (measured on AVX-512 with 2
# cores: the int4 op costs ~0.35 ms per 4 rows of a 4096x7168 expert, dequantizing it ~90 ms).
DEQUANT_MIN_TOKENS = int(os.environ.get("KIMIWEB_MOE_DEQUANT_MIN_TOKENS", "384"))


def fused_moe_cpu(
    hidden: torch.Tensor,  # [M, H]
    w13: Experts,  # [E, 2I, H]
    w2: Experts,  # [E, H, I]
    topk_weights: torch.Tensor,  # [M, k]
    topk_ids: torch.Tensor,  # [M, k]
) -> torch.Tensor:
    m, k = topk_ids.shape
    x = hidden.to(torch.bfloat16)
    inter = w13.out_features // 2
    flat_ids = topk_ids.reshape(-1)
    order = torch.argsort(flat_ids, stable=True)  # assignments grouped by expert
    counts = torch.bincount(flat_ids, minlength=w13.num_experts).tolist()
    flat_weights = topk_weights.reshape(-1).to(torch.float32)
    out = torch.zeros(m, hidden.shape[1], dtype=torch.float32)
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        slots = order[start : start + c]
        start += c
        rows = slots // k
        h = _linear(x[rows], w13, e)  # [c, 2I]
        a = F.silu(h[:, :inter]) * h[:, inter:]
        y = _linear(a, w2, e)  # [c, H]
        out.index_add_(0, rows, y.to(torch.float32) * flat_weights[slots].unsqueeze(1))
    return out.to(hidden.dtype)


def _linear(x: torch.Tensor, experts: Experts, e: int) -> torch.Tensor:
    """x [c, K] bf16 @ expert e's [N, K] weight^T -> [c, N] bf16."""
    if isinstance(experts, DenseExperts):
        return x @ experts.weight[e].t()
    assert isinstance(experts, Int4Experts)
    if x.shape[0] >= DEQUANT_MIN_TOKENS:
        return x @ experts.dequantize(torch.bfloat16, expert=e).t()
    experts.prepare_cpu()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(
        x.contiguous(), experts.cpu_packed[e], experts.group_size, experts.cpu_scales_and_zeros[e]
    )
    return y[:, : experts.out_features]
