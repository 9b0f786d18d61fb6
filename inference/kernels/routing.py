"""Expert selection for MoE layers: softmax top-k (Mixtral, Qwen3-MoE) and DeepSeek-V3/Kimi K2 grouped top-k.

Both return `(topk_weights float32 [M, k], topk_ids int64 [M, k])` ready for `fused_moe_w4a16`.
"""

import torch


def select_experts_softmax(
    router_logits: torch.Tensor, top_k: int, renormalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over all experts, keep the top k; renormalize so the k weights sum to one (Mixtral)."""
    probs = torch.softmax(router_logits.to(torch.float32), dim=-1)  # [M, E]
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


def select_experts_grouped(
    router_logits: torch.Tensor,  # [M, E]
    e_score_correction_bias: torch.Tensor | None,  # [E]
    top_k: int,
    n_group: int = 1,
    topk_group: int = 1,
    routed_scaling_factor: float = 1.0,
    renormalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3 `noaux_tc` routing, which Kimi K2 uses (n_group = topk_group = 1 there).

    Sigmoid scores; the bias only steers the choice (load balancing), the weights come from the unbiased
    scores. Groups are ranked by the sum of their two best biased scores and only the best `topk_group`
    groups compete. Weights are renormalized (if asked) and then multiplied by `routed_scaling_factor`.
    """
    m, e = router_logits.shape
    scores = torch.sigmoid(router_logits.to(torch.float32))  # [M, E]
    choice = scores if e_score_correction_bias is None else scores + e_score_correction_bias.to(torch.float32)
    if n_group > 1 and topk_group < n_group:
        grouped = choice.view(m, n_group, e // n_group)
        group_scores = grouped.topk(min(2, e // n_group), dim=-1).values.sum(dim=-1)  # [M, G]
        keep = torch.zeros_like(group_scores, dtype=torch.bool)
        keep.scatter_(1, group_scores.topk(topk_group, dim=-1).indices, True)
        choice = choice.masked_fill(~keep.repeat_interleave(e // n_group, dim=1), float("-inf"))
    ids = choice.topk(top_k, dim=-1).indices  # [M, k]
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * routed_scaling_factor, ids
