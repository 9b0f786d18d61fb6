"""INT4 (W4A16) weights in Kimi K2 Thinking's compressed-tensors `pack-quantized` format.

`pack_int4`/`unpack_int4` convert int4 values to and from int32 words; `quantize_rtn` quantizes a bf16
weight; `dequantize` is the inverse used by the reference kernel and loaders; `quantization_config`
builds the config.json block; `convert` is the checkpoint converter behind `python -m inference quantize`.
"""

from inference.quant.format import (
    KIMI_K2_IGNORE,
    PACK_FACTOR,
    SUPPORTED_GROUP_SIZES,
    dequantize,
    pack_int4,
    quantization_config,
    unpack_int4,
)
from inference.quant.quantize import quantize_rtn

__all__ = [
    "KIMI_K2_IGNORE",
    "PACK_FACTOR",
    "SUPPORTED_GROUP_SIZES",
    "dequantize",
    "pack_int4",
    "quantization_config",
    "quantize_rtn",
    "unpack_int4",
]
