"""Weight quantization to the symmetric group-wise int4 format (round-to-nearest for now).

`quantize_rtn` is the one method today; a better one (GPTQ, AWQ) would return the same
`(weight_packed, weight_scale)` pair, so callers do not change.
"""

import torch

from inference.quant.format import SUPPORTED_GROUP_SIZES, pack_int4


def quantize_rtn(weight: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize [..., N, K] to (weight_packed int32 [..., N, K/8], weight_scale bf16 [..., N, K/group]).

    Per-group absmax scale = absmax / 7 (so the largest weight maps to +-7, never clipped), rounded to
    bf16 before rounding the values, so dequantization with the stored scale is what we optimised.
    """
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ValueError(f"group size {group_size} not in {SUPPORTED_GROUP_SIZES}")
    k = weight.shape[-1]
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of the group size {group_size}")
    groups = weight.to(torch.float32).reshape(*weight.shape[:-1], k // group_size, group_size)
    scale = (groups.abs().amax(dim=-1) / 7.0).to(torch.bfloat16)  # [..., N, K/g]
    safe = scale.to(torch.float32).clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)
    values = torch.round(groups / safe).clamp_(-8, 7).to(torch.int8).reshape(weight.shape)
    return pack_int4(values), scale
