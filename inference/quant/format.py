"""The INT4 weight format Kimi K2 Thinking ships: compressed-tensors `pack-quantized`, symmetric int4 W4A16.

A linear weight `[N, K]` is stored as `weight_packed` int32 `[N, K/8]` (eight nibbles per word, nibble =
value + 8, element i of a word in bits 4i..4i+3), `weight_scale` `[N, K/group]` (bf16) and `weight_shape`
int32 `[2]`. Dequantized weight = (nibble - 8) * scale of its group. Leading dimensions (experts) pass through.
"""

import torch

NUM_BITS = 4
PACK_FACTOR = 32 // NUM_BITS  # nibbles per int32 word
SUPPORTED_GROUP_SIZES = (32, 64, 128)
_SHIFTS = torch.arange(0, 32, NUM_BITS, dtype=torch.int32)  # bit offset of element i in its word


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack int values in [-8, 7], shape [..., K] with K % 8 == 0, into int32 words [..., K/8]."""
    if values.shape[-1] % PACK_FACTOR:
        raise ValueError(f"last dimension {values.shape[-1]} is not a multiple of {PACK_FACTOR}")
    nibbles = (values.to(torch.int32) + 8).reshape(*values.shape[:-1], -1, PACK_FACTOR)  # [..., K/8, 8]
    if nibbles.numel() and (nibbles.min() < 0 or nibbles.max() > 15):
        raise ValueError("int4 values must lie in [-8, 7]")
    shifted = nibbles << _SHIFTS.to(values.device)
    return _or_reduce(shifted)


def _or_reduce(shifted: torch.Tensor) -> torch.Tensor:
    # The nibbles occupy disjoint bits; OR-ing them in int32 keeps bit 31 as the sign, like the C layout.
    word = shifted[..., 0].clone()
    for i in range(1, PACK_FACTOR):
        word |= shifted[..., i]
    return word


def unpack_int4(packed: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Unpack int32 words [..., K/8] into int8 values in [-8, 7], shape [..., K] (optionally cut to k)."""
    if packed.dtype != torch.int32:
        raise ValueError(f"weight_packed must be int32, got {packed.dtype}")
    # A little-endian int32 holds elements (0,1) in its first byte, low nibble first: split bytes.
    nibbles = packed.contiguous().view(torch.uint8)  # [..., K/2]
    values = torch.stack((nibbles & 0xF, nibbles >> 4), dim=-1).view(torch.int8)
    values = values.reshape(*packed.shape[:-1], -1) - 8
    return values if k is None else values[..., :k]


def dequantize(
    weight_packed: torch.Tensor,
    weight_scale: torch.Tensor,
    group_size: int,
    shape=None,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Dequantize packed int4 [..., N, K/8] with scales [..., N, K/group] to a dense [..., N, K] tensor."""
    k = int(shape[-1]) if shape is not None else weight_packed.shape[-1] * PACK_FACTOR
    if dtype == weight_scale.dtype and dtype in (torch.bfloat16, torch.float16) and k % PACK_FACTOR == 0:
        # Same bits as the float32 route below (nibble - 8 is exact and one product rounds once), with
        # nibbles written straight into the output: the CPU kernel's path for large expert batches.
        nibbles = weight_packed.contiguous().view(torch.uint8)  # [..., K/2], element 2j low, 2j+1 high
        weight = torch.empty(*nibbles.shape, 2, dtype=dtype, device=weight_packed.device)
        weight[..., 0] = nibbles & 0xF
        weight[..., 1] = nibbles >> 4
        groups = weight.view(*nibbles.shape[:-1], k // group_size, group_size)
        return groups.sub_(8).mul_(weight_scale.unsqueeze(-1)).view(*nibbles.shape[:-1], k)
    values = unpack_int4(weight_packed, k)
    groups = values.reshape(*values.shape[:-1], k // group_size, group_size).to(torch.float32)
    weight = groups * weight_scale.to(torch.float32).unsqueeze(-1)
    return weight.reshape(*values.shape).to(dtype)


def quantization_config(group_size: int = 32, ignore: list[str] | None = None) -> dict:
    """The `quantization_config` block of config.json, as Kimi K2 Thinking ships it."""
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ValueError(f"group size {group_size} not in {SUPPORTED_GROUP_SIZES}")
    return {
        "config_groups": {
            "group_0": {
                "input_activations": None,
                "output_activations": None,
                "targets": ["Linear"],
                "weights": {
                    "actorder": None,
                    "block_structure": None,
                    "dynamic": False,
                    "group_size": group_size,
                    "num_bits": NUM_BITS,
                    "observer": "minmax",
                    "observer_kwargs": {},
                    "strategy": "group",
                    "symmetric": True,
                    "type": "int",
                },
            }
        },
        "format": "pack-quantized",
        "ignore": list(ignore) if ignore is not None else list(KIMI_K2_IGNORE),
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    }


# Everything but the routed experts stays bf16: attention, shared experts, dense MLP layers, lm_head.
KIMI_K2_IGNORE = (
    "lm_head",
    r"re:.*self_attn.*",
    r"re:.*shared_experts.*",
    r"re:.*mlp\.(gate|up|gate_up|down)_proj.*",
)
