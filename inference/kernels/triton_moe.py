"""Fused MoE W4A16 on GPU: one Triton grouped GEMM with the int4 dequantization inside the kernel.

Assignments (token, slot) are sorted by expert and each expert's run is padded to BLOCK_M, so every
BLOCK_M rows of the sorted list belong to one expert (`moe_align`). The kernel multiplies those rows by
that expert's int4 weight, unpacking nibbles and applying group scales in registers, and is used twice:
gate+up (rows gathered from the tokens), then down (rows of the intermediate, scaled by the routing
weight). CI runs it on CPU tensors under TRITON_INTERPRET=1 (set before this module is imported).
"""

import torch
import triton
import triton.language as tl

from inference.kernels.experts import Experts, Int4Experts

# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages) by tokens per expert; BLOCK_K is a multiple
# of every supported group size up to 128 so one K step reads whole groups. Decode (few tokens per
# expert) is bound by weight bytes, so small M tiles and wide N; prefill wants square tiles.
_CONFIGS = (
    (4, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, GROUP_M=1, num_warps=4, num_stages=4)),
    (32, dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=128, GROUP_M=4, num_warps=4, num_stages=4)),
    (None, dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3)),
)
# The interpreter runs every program in Python: small tiles keep CI tests to seconds.
_INTERPRETER_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=1, num_warps=4, num_stages=1)


@triton.jit
def _moe_w4a16_kernel(
    a_ptr,  # [rows of A, K] activations
    b_ptr,  # [E, N, K/8] int32 packed int4
    scale_ptr,  # [E, N, K/group]
    c_ptr,  # [M * top_k, N] output, one row per assignment
    topk_weights_ptr,  # [M * top_k]
    sorted_ids_ptr,  # [padded] assignment ids grouped by expert; num_valid marks padding
    expert_ids_ptr,  # [padded / BLOCK_M] expert of each block of rows
    N,
    K,
    num_valid,
    num_padded,
    stride_am,
    stride_be,
    stride_bn,
    stride_se,
    stride_sn,
    stride_cm,
    group_size: tl.constexpr,
    top_k: tl.constexpr,
    A_ROWS_ARE_TOKENS: tl.constexpr,  # gate+up reads token rows (id // top_k); down reads assignment rows
    MUL_ROUTED_WEIGHT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(num_padded, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: neighbouring programs share the same weight columns while they are in cache.
    group_id = pid // (GROUP_M * num_pid_n)
    first_m = group_id * GROUP_M
    group_rows = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_rows)
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_rows

    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if expert < 0:  # a block past the last expert's run: nothing to do
        return
    offs_sorted = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ids = tl.load(sorted_ids_ptr + offs_sorted)
    row_mask = ids < num_valid
    if A_ROWS_ARE_TOKENS:
        a_rows = ids // top_k
    else:
        a_rows = ids

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None].to(tl.int64) * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :].to(tl.int64) * stride_bn + (offs_k[:, None] // 8)
    s_ptrs = scale_ptr + expert * stride_se + offs_n[None, :].to(tl.int64) * stride_sn
    shifts = ((offs_k % 8) * 4)[:, None]  # nibble i of a word sits in bits 4i..4i+3

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_mask = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        words = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0)  # [BLOCK_K, BLOCK_N]
        nibbles = (words >> shifts) & 0xF
        scales = tl.load(
            s_ptrs + ((k0 + offs_k[:, None]) // group_size), mask=k_mask[:, None] & n_mask[None, :], other=0.0
        )
        b = ((nibbles - 8).to(tl.float32) * scales.to(tl.float32)).to(a.dtype)
        acc += tl.dot(a, b)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K // 8

    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + ids, mask=row_mask, other=0.0)
        acc = acc * w[:, None].to(tl.float32)
    c_ptrs = c_ptr + ids[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=row_mask[:, None] & n_mask[None, :])


def moe_align(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort assignments by expert and pad each expert's run to block_m, without a device-to-host sync.

    Returns (sorted_ids int32 [P], expert_ids int32 [P / block_m]), P = M*k + E*(block_m - 1) rounded up
    to block_m: a size known from shapes alone, so CUDA graphs can capture it. Padding ids are M*k;
    blocks past the last expert's run have expert id -1 and the kernel skips them.
    """
    flat = topk_ids.reshape(-1).to(torch.int64)
    num_valid = flat.numel()
    device = flat.device
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # bincount would sync to size its output
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    sorted_experts = flat[order]
    # Position of each sorted assignment: its expert's padded start + its rank within the expert.
    rank = torch.arange(num_valid, device=device) - (torch.cumsum(counts, 0) - counts)[sorted_experts]
    max_blocks = triton.cdiv(num_valid + num_experts * (block_m - 1), block_m)
    sorted_ids = torch.full((max_blocks * block_m,), num_valid, dtype=torch.int32, device=device)
    sorted_ids[(padded_end - padded)[sorted_experts] + rank] = order.to(torch.int32)
    block_starts = torch.arange(max_blocks, device=device) * block_m
    expert_ids = torch.searchsorted(padded_end, block_starts, right=True)
    expert_ids = torch.where(expert_ids < num_experts, expert_ids, -1).to(torch.int32)
    return sorted_ids, expert_ids


def _config(tokens_per_expert: float) -> dict:
    import triton.knobs

    if triton.knobs.runtime.interpret:
        return _INTERPRETER_CONFIG
    for limit, config in _CONFIGS:
        if limit is None or tokens_per_expert <= limit:
            return config
    raise AssertionError("unreachable")


def invoke_moe_w4a16(
    a: torch.Tensor,
    experts: Int4Experts,
    out: torch.Tensor,
    topk_weights: torch.Tensor,
    sorted_ids: torch.Tensor,
    expert_ids: torch.Tensor,
    top_k: int,
    a_rows_are_tokens: bool,
    mul_routed_weight: bool,
    config: dict,
) -> None:
    """One launch of the grouped GEMM: out[id] = A[row(id)] @ dequant(W[expert])^T for each sorted id."""
    packed, scale = experts.weight_packed, experts.weight_scale
    n, k = experts.out_features, experts.in_features
    config = dict(config)
    num_warps, num_stages = config.pop("num_warps"), config.pop("num_stages")
    grid = (triton.cdiv(sorted_ids.numel(), config["BLOCK_M"]) * triton.cdiv(n, config["BLOCK_N"]),)
    _moe_w4a16_kernel[grid](
        a,
        packed,
        scale,
        out,
        topk_weights,
        sorted_ids,
        expert_ids,
        n,
        k,
        topk_weights.numel(),
        sorted_ids.numel(),
        a.stride(0),
        packed.stride(0),
        packed.stride(1),
        scale.stride(0),
        scale.stride(1),
        out.stride(0),
        group_size=experts.group_size,
        top_k=top_k,
        A_ROWS_ARE_TOKENS=a_rows_are_tokens,
        MUL_ROUTED_WEIGHT=mul_routed_weight,
        num_warps=num_warps,
        num_stages=num_stages,
        **config,
    )


def fused_moe_triton(
    hidden: torch.Tensor,  # [M, H] fp16/bf16 (fp16/fp32 under the interpreter)
    w13: Experts,  # Int4Experts [E, 2I, H]
    w2: Experts,  # Int4Experts [E, H, I]
    topk_weights: torch.Tensor,  # [M, k]
    topk_ids: torch.Tensor,  # [M, k]
    config: dict | None = None,  # tile sizes; None picks from _CONFIGS (bench/gpu --tune sweeps them)
) -> torch.Tensor:
    if not (isinstance(w13, Int4Experts) and isinstance(w2, Int4Experts)):
        raise TypeError("the Triton backend runs int4 experts; use backend='cpu' or a dense path for bf16")
    m, top_k = topk_ids.shape
    hidden = hidden.contiguous()
    inter = w2.in_features
    config = config or _config(m * top_k / w13.num_experts)
    sorted_ids, expert_ids = moe_align(topk_ids, w13.num_experts, config["BLOCK_M"])
    weights = topk_weights.reshape(-1).to(torch.float32).contiguous()

    gate_up = torch.empty(m * top_k, 2 * inter, dtype=hidden.dtype, device=hidden.device)
    invoke_moe_w4a16(hidden, w13, gate_up, weights, sorted_ids, expert_ids, top_k, True, False, config)
    gate, up = gate_up.float().chunk(2, dim=-1)
    act = (torch.nn.functional.silu(gate) * up).to(hidden.dtype)  # [M*k, I]
    down = torch.empty(m * top_k, hidden.shape[1], dtype=hidden.dtype, device=hidden.device)
    invoke_moe_w4a16(act, w2, down, weights, sorted_ids, expert_ids, top_k, False, True, config)
    return down.view(m, top_k, -1).sum(dim=1, dtype=torch.float32).to(hidden.dtype)
