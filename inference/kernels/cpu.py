"""Fused MoE on CPU: tokens grouped by expert, int4 experts through the native W4A16 kernel.

The native kernel (`w4a16_cpu/w4a16_cpu.cpp`, built at setup) reads the compressed-tensors int4 weights
as loaded: AVX-512 BF16 dot products for few tokens per expert; from `many_token_crossover()` tokens on
(measured per CPU, cached in var/), AMX tiles, or on CPUs without AMX 32-row blocks dequantized once into a
thread-local buffer and multiplied by an AVX-512 BF16 GEMM. Where it is unavailable (not built, no AVX-512
BF16, or `KIMIWEB_MOE_CPU_KERNEL=torch`), torch's `_weight_int4pack_mm_for_cpu` runs instead: it
dequantizes inside its GEMM but its cost grows with the token count, so an expert with at least
`DEQUANT_MIN_TOKENS` tokens is dequantized once and multiplied in bf16 (oneDNN). Activations run in bf16.
With the native kernel the whole MoE is one call (`moe_w4a16`: grouping, both projections, SiLU-and-mul and the
weighted sum in C++), since at decode sizes eager torch's per-op overhead was a sixth of the time on
Moonlight-sized experts. The torch path and bf16 experts group on Python lists and use views for
single-token experts, for the same reason.
"""

import os

import torch
import torch.nn.functional as F

from inference.kernels import w4a16_cpu
from inference.kernels.experts import DenseExperts, Experts, Int4Experts

# Tokens per expert from which dequantize + bf16 GEMM beats torch's int4 op (the fallback). Measured with
# one AVX-512 core on a Kimi K2 expert: the int4 op costs ~1.1 ms per row, a bf16 GEMM ~0.45 ms per row,
# dequantizing w13 + w2 ~70 ms, so they cross near 110 rows; the ratio is the same for smaller experts (all
# scale with N*K).
DEQUANT_MIN_TOKENS = int(os.environ.get("KIMIWEB_MOE_DEQUANT_MIN_TOKENS", "128"))
# Tokens per expert from which the native kernel leaves its dot kernel (measured per CPU, cached in var/).
many_token_crossover = w4a16_cpu.many_token_crossover


def fused_moe_cpu(
    hidden: torch.Tensor,  # [M, H]
    w13: Experts,  # [E, 2I, H]
    w2: Experts,  # [E, H, I]
    topk_weights: torch.Tensor,  # [M, k]
    topk_ids: torch.Tensor,  # [M, k]
) -> torch.Tensor:
    x = hidden.to(torch.bfloat16)
    inter = w13.out_features // 2
    if not hidden.is_cuda:
        w13.prepare_cpu()
        w2.prepare_cpu()
        kernel = w4a16_cpu.native()
        if kernel is not None and isinstance(w13, Int4Experts) and isinstance(w2, Int4Experts):
            out = kernel.moe_w4a16(
                x.contiguous(),
                w13.weight_packed,
                w13.weight_scale,
                w13.group_size,
                w2.weight_packed,
                w2.weight_scale,
                w2.group_size,
                topk_ids,
                topk_weights,
                many_token_crossover(),
            )
            return out.to(hidden.dtype)
    # Group (token, weight) pairs by expert in Python: cheaper than tensor ops for decode-sized batches.
    by_expert: dict[int, tuple[list[int], list[float]]] = {}
    for t, (row_ids, row_weights) in enumerate(zip(topk_ids.tolist(), topk_weights.tolist(), strict=True)):
        for e, w in zip(row_ids, row_weights, strict=True):
            tokens, weights = by_expert.setdefault(e, ([], []))
            tokens.append(t)
            weights.append(w)

    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for e, (tokens, weights) in by_expert.items():
        if len(tokens) == 1:
            t = tokens[0]
            h = _linear(x[t : t + 1], w13, e)  # [1, 2I]
            a = F.silu(h[:, :inter]).mul_(h[:, inter:])
            out[t].add_(_linear(a, w2, e)[0], alpha=weights[0])
        else:
            rows = torch.tensor(tokens, device=hidden.device)
            h = _linear(x.index_select(0, rows), w13, e)  # [c, 2I]
            a = F.silu(h[:, :inter]).mul_(h[:, inter:])
            y = _linear(a, w2, e).to(torch.float32)  # [c, H]
            out.index_add_(0, rows, y.mul_(torch.tensor(weights, device=hidden.device).unsqueeze(1)))
    return out.to(hidden.dtype)


def _linear(x: torch.Tensor, experts: Experts, e: int) -> torch.Tensor:
    """x [c, K] bf16 @ expert e's [N, K] weight^T -> [c, N] bf16."""
    if isinstance(experts, DenseExperts):
        return x @ experts.weight[e].t()
    assert isinstance(experts, Int4Experts)
    # torch's int4 ops: fused_moe_cpu hands int4 experts to the native kernel whenever it is there (here only
    # when it is not, or for int4 mixed with bf16 experts).
    if x.shape[0] >= DEQUANT_MIN_TOKENS:
        return x @ experts.dequantize(torch.bfloat16, expert=e).t()
    packed, scales_and_zeros = experts.cpu_expert(e)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(
        x.contiguous(), packed, experts.group_size, scales_and_zeros
    )
    return y if y.shape[1] == experts.out_features else y[:, : experts.out_features]
