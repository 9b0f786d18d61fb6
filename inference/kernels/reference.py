"""The oracle: dequantize each expert and run the MoE in float32, token by token, as the math reads.

Slow on purpose; every fast path is tested against it.
"""

import torch
import torch.nn.functional as F

from inference.kernels.experts import Experts


def fused_moe_reference(
    hidden: torch.Tensor,  # [M, H]
    w13: Experts,  # [E, 2I, H]
    w2: Experts,  # [E, H, I]
    topk_weights: torch.Tensor,  # [M, k]
    topk_ids: torch.Tensor,  # [M, k]
    activation: str = "silu",
) -> torch.Tensor:
    check_activation(activation)
    x = hidden.to(torch.float32)
    out = torch.zeros_like(x)
    inter = w13.out_features // 2
    for e in torch.unique(topk_ids).tolist():
        rows, slots = (topk_ids == e).nonzero(as_tuple=True)
        h = x[rows] @ w13.dequantize(torch.float32, expert=e).t()  # [c, 2I]
        a = F.silu(h[:, :inter]) * h[:, inter:]
        y = a @ w2.dequantize(torch.float32, expert=e).t()  # [c, H]
        out.index_add_(0, rows, y * topk_weights[rows, slots].to(torch.float32).unsqueeze(1))
    return out.to(hidden.dtype)


def check_activation(activation: str) -> None:
    if activation != "silu":
        raise ValueError(f"activation {activation!r} is not supported (only 'silu')")
