"""The INT4 format: exact pack/unpack, RTN quantization error, Kimi K2's quantization_config, and
interop with the `compressed-tensors` package in both directions."""

import pytest
import torch

from inference.quant import (
    dequantize,
    pack_int4,
    quantization_config,
    quantize_rtn,
    unpack_int4,
)


def test_pack_then_unpack_returns_every_int4_value_exactly():
    values = torch.arange(-8, 8, dtype=torch.int8).repeat(6, 4)  # [6, 64], every value in every slot
    values = values[:, torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    packed = pack_int4(values)
    assert packed.dtype == torch.int32 and packed.shape == (6, 8)
    assert torch.equal(unpack_int4(packed), values)


def test_packed_word_puts_element_i_in_bits_4i_to_4i_plus_3_as_value_plus_8():
    values = torch.tensor([[-8, -7, 0, 1, 2, 3, 6, 7]], dtype=torch.int8)
    word = int(pack_int4(values)[0, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == [0, 1, 8, 9, 10, 11, 14, 15]


def test_pack_rejects_values_outside_int4():
    with pytest.raises(ValueError):
        pack_int4(torch.full((1, 8), 8, dtype=torch.int8))


def test_rtn_keeps_each_weight_within_half_a_step_of_its_group_scale():
    torch.manual_seed(0)
    weight = torch.randn(3, 32, 128, dtype=torch.bfloat16)
    packed, scale = quantize_rtn(weight, group_size=32)
    assert packed.shape == (3, 32, 16) and scale.shape == (3, 32, 4) and scale.dtype == torch.bfloat16
    restored = dequantize(packed, scale, 32, dtype=torch.float32)
    step = scale.float().repeat_interleave(32, dim=-1)
    assert ((restored - weight.float()).abs() <= 0.5 * step + 1e-6).all()
    # and the group's largest magnitude maps onto +-7 steps
    assert unpack_int4(packed).abs().amax() == 7


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_rtn_relative_error_is_that_of_4_bit_absmax(group_size):
    torch.manual_seed(1)
    weight = torch.randn(64, 256)
    packed, scale = quantize_rtn(weight, group_size)
    restored = dequantize(packed, scale, group_size, shape=weight.shape, dtype=torch.float32)
    assert (restored - weight).norm() / weight.norm() < 0.13


def test_quantization_config_is_kimi_k2_thinkings():
    config = quantization_config()
    assert config["quant_method"] == "compressed-tensors"
    assert config["format"] == "pack-quantized"
    weights = config["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == 4 and weights["symmetric"] is True
    assert weights["strategy"] == "group" and weights["group_size"] == 32 and weights["type"] == "int"
    assert config["config_groups"]["group_0"]["targets"] == ["Linear"]
    assert config["ignore"] == [
        "lm_head",
        r"re:.*self_attn.*",
        r"re:.*shared_experts.*",
        r"re:.*mlp\.(gate|up|gate_up|down)_proj.*",
    ]


# --- interop with the compressed-tensors package -------------------------------------------------


def _compressed_tensors_scheme(group_size=32):
    from compressed_tensors.quantization import QuantizationConfig

    # Our config block must parse as theirs: the scheme comes out of our own quantization_config.
    return QuantizationConfig.model_validate(quantization_config(group_size)).config_groups["group_0"]


@pytest.mark.parametrize("group_size", [32, 128])
def test_compressed_tensors_decompresses_our_weights_to_the_same_values(group_size):
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    torch.manual_seed(2)
    weight = torch.randn(48, 256, dtype=torch.bfloat16)
    packed, scale = quantize_rtn(weight, group_size)
    state = {"weight_packed": packed, "weight_scale": scale, "weight_shape": torch.tensor([48, 256])}
    theirs = PackedQuantizationCompressor.decompress(state, _compressed_tensors_scheme(group_size))["weight"]
    ours = dequantize(packed, scale, group_size, shape=(48, 256))
    assert torch.equal(theirs.to(torch.bfloat16), ours)


def test_we_read_what_the_compressed_tensors_compressor_writes():
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    torch.manual_seed(3)
    weight = torch.randn(32, 128, dtype=torch.bfloat16)
    scale = (weight.float().view(32, 4, 32).abs().amax(-1) / 7).to(torch.bfloat16)  # their scale input
    state = {"weight": weight, "weight_scale": scale}
    compressed = PackedQuantizationCompressor.compress(state, _compressed_tensors_scheme())
    assert set(compressed) == {"weight_packed", "weight_scale", "weight_shape"}
    ours = dequantize(
        compressed["weight_packed"], compressed["weight_scale"], 32, shape=compressed["weight_shape"]
    )
    theirs = PackedQuantizationCompressor.decompress(compressed, _compressed_tensors_scheme())["weight"]
    assert torch.equal(ours, theirs.to(torch.bfloat16))
    # Their quantizer and ours agree but for values on a rounding boundary (they divide in bf16).
    differ = unpack_int4(compressed["weight_packed"]).int() - unpack_int4(quantize_rtn(weight, 32)[0]).int()
    assert differ.abs().max() <= 1 and (differ != 0).float().mean() < 0.01


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dequantizing_straight_to_half_precision_gives_the_float32_routes_bits(dtype):
    torch.manual_seed(4)
    packed, scale = quantize_rtn(torch.randn(2, 16, 128), 32)
    scale = scale.to(dtype)
    via_float32 = dequantize(packed, scale, 32, dtype=torch.float32).to(dtype)
    assert torch.equal(dequantize(packed, scale, 32, dtype=dtype), via_float32)
