"""Routed experts for the MoE families: E experts' gate/up/down weights stacked as one tensor each,
in bf16/fp32 or INT4 (compressed-tensors pack-quantized), and the router helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PROJ = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down", "w1": "gate", "w3": "up", "w2": "down"}


def expert_part(proj: str) -> str:
    """Map a checkpoint's projection name (Mixtral w1/w2/w3 or gate/up/down_proj) to gate/up/down."""
    return _PROJ[proj]


def select_experts_softmax(router_logits: torch.Tensor, top_k: int, renormalize: bool):
    """Mixtral/Qwen3-MoE routing: softmax over experts, keep the top k (optionally renormalised)."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


def select_experts_grouped(
    router_logits: torch.Tensor,  # [T, E]
    correction_bias: torch.Tensor | None,  # [E]
    top_k: int,
    num_groups: int,
    topk_groups: int,
    renormalize: bool,
    scaling_factor: float,
    scoring: str = "sigmoid",
):
    """DeepSeek-V3 routing: sigmoid scores, pick the best groups by their top-2 sum (with the
    load-balancing bias), then the top k experts inside them; weights come from the unbiased scores."""
    scores = router_logits.float().sigmoid() if scoring == "sigmoid" else router_logits.float().softmax(-1)
    biased = scores + correction_bias.float() if correction_bias is not None else scores
    t, e = scores.shape
    if num_groups > 1:
        group_scores = biased.view(t, num_groups, -1).topk(2, dim=-1).values.sum(-1)  # [T, G]
        group_idx = group_scores.topk(topk_groups, dim=-1).indices
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1.0)
        score_mask = group_mask.unsqueeze(-1).expand(t, num_groups, e // num_groups).reshape(t, e)
        biased = biased.masked_fill(score_mask == 0, float("-inf"))
    ids = biased.topk(top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * scaling_factor, ids


class RoutedExperts(nn.Module):
    """The routed experts of one MoE layer. Checkpoint tensors are staged one by one while loading,
    then `finalize()` stacks them: bf16 weights as w13 [E, 2I, H] / w2 [E, H, I], INT4 ones through
    the kernels package's container and fused W4A16 kernel."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int, dtype: torch.dtype):
        super().__init__()
        self.num_experts, self.hidden, self.intermediate, self.dtype = (
            num_experts,
            hidden,
            intermediate,
            dtype,
        )
        self._staged: dict[tuple[int, str, str], torch.Tensor] = {}
        self.w13: torch.Tensor | None = None
        self.w2: torch.Tensor | None = None
        self.int4 = None  # the kernels package's expert container when the checkpoint is INT4

    def stage(self, expert: int, proj: str, suffix: str, tensor: torch.Tensor) -> None:
        self._staged[(expert, expert_part(proj), suffix)] = tensor

    def finalize(self) -> None:
        if not self._staged:
            return
        staged, self._staged = self._staged, {}
        if any(suffix == "weight_packed" for (_, _, suffix) in staged):
            self._finalize_int4(staged)
            return
        gate = torch.stack([staged[(e, "gate", "weight")] for e in range(self.num_experts)])
        up = torch.stack([staged[(e, "up", "weight")] for e in range(self.num_experts)])
        self.w13 = torch.cat([gate, up], dim=1).to(self.dtype).contiguous()  # [E, 2I, H]
        self.w2 = torch.stack([staged[(e, "down", "weight")] for e in range(self.num_experts)])
        self.w2 = self.w2.to(self.dtype).contiguous()  # [E, H, I]

    def _finalize_int4(self, staged) -> None:
        def stacked(part, suffix):
            return torch.stack([staged[(e, part, suffix)] for e in range(self.num_experts)])

        packed13 = torch.cat([stacked("gate", "weight_packed"), stacked("up", "weight_packed")], dim=1)
        scale13 = torch.cat([stacked("gate", "weight_scale"), stacked("up", "weight_scale")], dim=1)
        packed2, scale2 = stacked("down", "weight_packed"), stacked("down", "weight_scale")
        self.int4 = _int4_container(packed13, scale13, packed2, scale2, self.dtype)

    def forward(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], topk_weights/topk_ids [T, k] → [T, H]."""
        if self.int4 is not None:
            return self.int4(x, topk_weights, topk_ids)
        return moe_reference(x, self.w13, self.w2, topk_weights, topk_ids)


def moe_reference(x, w13, w2, topk_weights, topk_ids):
    """Loop over the experts that got tokens: gather, SwiGLU, scatter-add weighted outputs."""
    out = torch.zeros_like(x)
    flat_ids = topk_ids.reshape(-1)
    order = flat_ids.argsort(stable=True)
    counts = torch.bincount(flat_ids, minlength=w13.shape[0]).tolist()
    token_of = order // topk_ids.shape[1]
    weight_of = topk_weights.reshape(-1)[order].to(x.dtype)
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        tokens = token_of[start : start + n]
        h = x[tokens] @ w13[e].t()  # [n, 2I]
        gate, up = h.chunk(2, dim=-1)
        y = (F.silu(gate) * up) @ w2[e].t()  # [n, H]
        out.index_add_(0, tokens, y * weight_of[start : start + n, None])
        start += n
    return out


def _int4_container(packed13, scale13, packed2, scale2, dtype):
    """Hand INT4 experts to the kernels package; without it, dequantize once (correct, not fast)."""
    try:
        from inference.kernels import Int4Experts  # noqa: F401  (published by the kernels engineer)
    except ImportError:
        pass
    else:
        return _KernelExperts(packed13, scale13, packed2, scale2, dtype)
    w13 = dequantize_pack_quantized(packed13, scale13).to(dtype)
    w2 = dequantize_pack_quantized(packed2, scale2).to(dtype)
    return lambda x, tw, ti: moe_reference(x, w13, w2, tw, ti)


class _KernelExperts:
    def __init__(self, packed13, scale13, packed2, scale2, dtype):
        from inference.kernels import Int4Experts

        self.experts = Int4Experts(packed13, scale13, packed2, scale2)
        self.dtype = dtype

    def __call__(self, x, topk_weights, topk_ids):
        from inference.kernels import fused_moe_w4a16

        return fused_moe_w4a16(x, self.experts, topk_weights, topk_ids)


def dequantize_pack_quantized(
    packed: torch.Tensor, scale: torch.Tensor, group_size: int = 32
) -> torch.Tensor:
    """compressed-tensors pack-quantized → float: int32 words of 8 nibbles (value + 8, element i in
    bits 4i..4i+3), symmetric, one scale per `group_size` inputs. packed [..., N, K/8] → [..., N, K]."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # [..., N, K/8, 8]
    values = (nibbles.reshape(*packed.shape[:-1], -1) - 8).float()  # [..., N, K]
    scales = scale.float().repeat_interleave(group_size, dim=-1)
    return values * scales
