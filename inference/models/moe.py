"""Routed experts for the MoE families. Checkpoint tensors are staged one by one while loading, then
stacked into the kernels package's containers (`Int4Experts` for compressed-tensors INT4 checkpoints,
`DenseExperts` for bf16) and run through `fused_moe_w4a16`."""

from __future__ import annotations

import os

import torch
from torch import nn

from inference.kernels import DenseExperts, Int4Experts, fused_moe_w4a16

_PART = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down", "w1": "gate", "w3": "up", "w2": "down"}

# "cpu" (int4pack ops) in production; "reference" dequantizes, the oracle for tests.
MOE_BACKEND = os.environ.get("KIMIWEB_MOE_BACKEND", "auto")


def quant_group_size(cfg: dict) -> int:
    """The INT4 group size from a compressed-tensors `quantization_config` (32 when absent)."""
    groups = (cfg.get("quantization_config") or {}).get("config_groups") or {}
    for group in groups.values():
        size = (group.get("weights") or {}).get("group_size")
        if size:
            return int(size)
    return 32


class RoutedExperts(nn.Module):
    """The routed experts of one MoE layer: w13 [E, 2I, H] (gate rows then up rows) and w2 [E, H, I]."""

    def __init__(
        self, num_experts: int, hidden: int, intermediate: int, dtype: torch.dtype, group_size: int = 32
    ):
        super().__init__()
        self.num_experts, self.hidden, self.intermediate = num_experts, hidden, intermediate
        self.dtype, self.group_size = dtype, group_size
        self._staged: dict[tuple[int, str, str], torch.Tensor] = {}
        self.w13 = None
        self.w2 = None

    def stage(self, expert: int, proj: str, suffix: str, tensor: torch.Tensor) -> None:
        """Keep one checkpoint tensor (`proj` as named in the checkpoint, `suffix` weight/weight_packed/...)."""
        self._staged[(expert, _PART[proj], suffix)] = tensor

    def finalize(self) -> None:
        staged, self._staged = self._staged, {}
        if not staged:
            return
        experts = range(self.num_experts)
        if any(suffix == "weight_packed" for (_, _, suffix) in staged):

            def int4(part):
                return Int4Experts.stack(
                    [
                        (staged[(e, part, "weight_packed")], staged[(e, part, "weight_scale")])
                        for e in experts
                    ],
                    self.group_size,
                )

            self.w13 = Int4Experts.concat([int4("gate"), int4("up")])
            self.w2 = int4("down")
            if MOE_BACKEND in ("auto", "cpu"):
                self.w13.prepare_cpu()
                self.w2.prepare_cpu()
        else:
            # The CPU kernel runs activations in bf16, so dense experts are kept in bf16 too.
            def dense(part):
                return torch.stack([staged[(e, part, "weight")] for e in experts]).to(torch.bfloat16)

            self.w13 = DenseExperts(torch.cat([dense("gate"), dense("up")], dim=1).contiguous())
            self.w2 = DenseExperts(dense("down").contiguous())

    def forward(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], topk_weights/topk_ids [T, k] → [T, H] in x's dtype."""
        return fused_moe_w4a16(x, self.w13, self.w2, topk_weights, topk_ids, backend=MOE_BACKEND)
