"""Fused MoE kernels for W4A16 experts (int4 weights, bf16/fp16 activations) and MoE routing.

API (what models call):

    from inference.kernels import Int4Experts, DenseExperts, fused_moe_w4a16, select_experts_grouped

    w13 = Int4Experts.concat([gate, up])   # or Int4Experts(weight_packed, weight_scale, group_size)
    w2 = Int4Experts(...)
    w13.prepare_cpu(); w2.prepare_cpu()    # once, at load (views; a torch repack only without the native kernel)
    topk_weights, topk_ids = select_experts_grouped(router_logits, bias, top_k=8, n_group=1,
                                                    topk_group=1, routed_scaling_factor=2.827)
    out = fused_moe_w4a16(hidden, w13, w2, topk_weights, topk_ids)   # [M, H], dtype of hidden

Weight layout (compressed-tensors pack-quantized, as Kimi K2 Thinking ships it), per projection:
    weight_packed int32 [E, N, K/8]: 8 int4 values per word, nibble = value + 8, element i in bits 4i..4i+3
    weight_scale  bf16  [E, N, K/group]: weight = (nibble - 8) * scale of its group (symmetric, no zero)
    w13: N = 2 * intermediate, rows [0, I) gate_proj then [I, 2I) up_proj, K = hidden
    w2:  N = hidden, K = intermediate
Per-expert checkpoint tensors stack with `Int4Experts.stack([(packed, scale), ...], group_size)`;
`load_experts(get_tensor, "model.layers.3.mlp.experts", num_experts)` reads a layer's (w13, w2) from an
INT4 or bf16 checkpoint.
`DenseExperts(weight [E, N, K])` (or `Int4Experts.to_dense()`) runs the same call in bf16: the baseline
for INT4-vs-bf16 comparisons.

The MoE: out[t] = sum_j topk_weights[t, j] * W2[e] @ (silu(gate_e x_t) * up_e x_t), e = topk_ids[t, j].
Routing weights are applied inside (any routed_scaling_factor is already in them from the router).

Backends: "reference" (dequantize + float32 matmul, the oracle), "cpu" (the native W4A16 CPU kernel, built
by `make setup` / `python -m inference.kernels.w4a16_cpu`, else torch's int4pack ops; bf16 activations),
"triton" (fused grouped GEMM with in-kernel dequantization; GPU, or CPU tensors under TRITON_INTERPRET=1),
"auto" (triton for int4 experts on CUDA, cpu otherwise; the cpu path runs bf16 experts on any device).
"""

import torch

from inference.kernels.cpu import fused_moe_cpu
from inference.kernels.experts import DenseExperts, Experts, Int4Experts, load_experts
from inference.kernels.reference import check_activation, fused_moe_reference
from inference.kernels.routing import select_experts_grouped, select_experts_softmax

BACKENDS = ("auto", "reference", "cpu", "triton")


def fused_moe_w4a16(
    hidden: torch.Tensor,  # [M, H]
    w13: Experts,  # [E, 2I, H]
    w2: Experts,  # [E, H, I]
    topk_weights: torch.Tensor,  # [M, k]
    topk_ids: torch.Tensor,  # [M, k]
    *,
    activation: str = "silu",
    backend: str = "auto",
) -> torch.Tensor:
    """Routed-expert MoE: gate+up, SiLU-and-mul, down, weighted sum over the k experts -> [M, H]."""
    check_activation(activation)
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} not in {BACKENDS}")
    _check_shapes(hidden, w13, w2, topk_weights, topk_ids)
    if backend == "auto":
        # bf16 experts on a GPU take the grouped torch path ("cpu" is device-agnostic for dense weights).
        int4 = isinstance(w13, Int4Experts) and isinstance(w2, Int4Experts)
        backend = "triton" if hidden.is_cuda and int4 else "cpu"
    if backend == "reference":
        return fused_moe_reference(hidden, w13, w2, topk_weights, topk_ids)
    if backend == "cpu":
        return fused_moe_cpu(hidden, w13, w2, topk_weights, topk_ids)
    from inference.kernels.triton_moe import fused_moe_triton

    return fused_moe_triton(hidden, w13, w2, topk_weights, topk_ids)


def _check_shapes(hidden, w13, w2, topk_weights, topk_ids) -> None:
    m, h = hidden.shape
    if w13.in_features != h or w2.out_features != h:
        raise ValueError(f"hidden size {h} does not match experts w13 {w13!r} / w2 {w2!r}")
    if w13.out_features != 2 * w2.in_features:
        raise ValueError(f"w13 must stack gate and up: {w13.out_features} != 2 * {w2.in_features}")
    if w13.num_experts != w2.num_experts:
        raise ValueError("w13 and w2 have different expert counts")
    if topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != m:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} / topk_weights must be [M={m}, k]")


__all__ = [
    "BACKENDS",
    "DenseExperts",
    "Int4Experts",
    "fused_moe_w4a16",
    "load_experts",
    "select_experts_grouped",
    "select_experts_softmax",
]
