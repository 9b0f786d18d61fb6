"""`python -m inference quantize SRC DST`: turn a bf16 Hugging Face MoE checkpoint into Kimi K2's INT4 format.

Routed experts become compressed-tensors `pack-quantized` (`weight_packed`, `weight_scale`, `weight_shape`);
everything else is copied unchanged. Works shard by shard (only one shard's tensors in memory), writes a new
safetensors index, copies tokenizer and other files, and adds `quantization_config` to config.json.
"""

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from inference.quant.format import KIMI_K2_IGNORE, SUPPORTED_GROUP_SIZES, quantization_config
from inference.quant.quantize import quantize_rtn

# Routed expert weights of each supported family; shared experts ("shared_experts.gate_proj",
# Qwen2-MoE's "shared_expert.") never match because their projection is not under "experts.<E>.".
ROUTED_EXPERT = {
    "DeepseekV3ForCausalLM": re.compile(r"\.mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight$"),
    "Qwen3MoeForCausalLM": re.compile(r"\.mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight$"),
    "MixtralForCausalLM": re.compile(r"\.block_sparse_moe\.experts\.\d+\.(w1|w2|w3)\.weight$"),
}
# Kimi's ignore list names the Linear modules that stay bf16; Mixtral and Qwen3-MoE routers are Linear too.
IGNORE = {
    "DeepseekV3ForCausalLM": list(KIMI_K2_IGNORE),
    "Qwen3MoeForCausalLM": [*KIMI_K2_IGNORE, r"re:.*mlp\.gate$"],
    "MixtralForCausalLM": [*KIMI_K2_IGNORE, r"re:.*block_sparse_moe\.gate$"],
}
_CHECKPOINT_FILES = re.compile(r"(\.safetensors|\.safetensors\.index\.json|\.bin|\.bin\.index\.json|\.pt)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="bf16 Hugging Face checkpoint directory")
    parser.add_argument("dst", type=Path, help="output directory (created; must be empty if it exists)")
    parser.add_argument("--group-size", type=int, default=32, choices=SUPPORTED_GROUP_SIZES)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        summary = convert_checkpoint(args.src, args.dst, group_size=args.group_size)
    except ConversionError as exc:
        print(f"quantize: {exc}", file=sys.stderr)
        return 2
    print(
        f"quantized {summary['quantized']} expert weights, copied {summary['copied']} tensors "
        f"into {summary['shards']} shards: {args.dst}"
    )
    return 0


class ConversionError(Exception):
    """A checkpoint we cannot convert; the message says why."""


def convert_checkpoint(src: Path, dst: Path, group_size: int = 32) -> dict:
    src, dst = Path(src), Path(dst)
    config = _read_config(src)
    arch = config["architectures"][0]
    pattern = ROUTED_EXPERT[arch]
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ConversionError(f"no *.safetensors files in {src}")
    if dst.exists() and any(dst.iterdir()):
        raise ConversionError(f"{dst} is not empty")

    # First pass reads only headers: count tensors and refuse bad shapes before anything is written.
    total = 0
    for shard in shards:
        with safe_open(shard, framework="pt") as f:
            for name in f.keys():
                total += 1
                shape = f.get_slice(name).get_shape()
                if pattern.search(name) and (len(shape) != 2 or shape[1] % group_size):
                    raise ConversionError(
                        f"{name} {tuple(shape)}: in_features is not a multiple of {group_size}"
                    )
    dst.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total_size = quantized = copied = 0
    with tqdm(total=total, unit="tensor", desc="quantize", file=sys.stderr) as progress:
        for shard in shards:
            out: dict[str, torch.Tensor] = {}
            with safe_open(shard, framework="pt") as f:
                metadata = f.metadata() or {}
                for name in f.keys():
                    tensor = f.get_tensor(name)
                    if pattern.search(name):
                        out.update(_quantize_linear(name, tensor, group_size))
                        quantized += 1
                    else:
                        out[name] = tensor
                        copied += 1
                    progress.update()
            save_file(out, dst / shard.name, metadata={**metadata, "format": "pt"})
            for name, tensor in out.items():
                weight_map[name] = shard.name
                total_size += tensor.numel() * tensor.element_size()
            del out
    if quantized == 0:
        raise ConversionError(f"no routed expert weights found for {arch}; nothing to quantize")

    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config["quantization_config"] = quantization_config(group_size, ignore=IGNORE[arch])
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in src.iterdir():
        if path.is_file() and path.name != "config.json" and not _CHECKPOINT_FILES.search(path.name):
            shutil.copy2(path, dst / path.name)
    return {"quantized": quantized, "copied": copied, "shards": len(shards)}


def _read_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path} not found")
    config = json.loads(path.read_text())
    arch = (config.get("architectures") or [None])[0]
    if arch not in ROUTED_EXPERT:
        raise ConversionError(
            f"architecture {arch!r} is not supported (supported: {', '.join(ROUTED_EXPERT)})"
        )
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method")
        raise ConversionError(f"{src} is already quantized ({method}); start from a bf16 checkpoint")
    return config


def _quantize_linear(name: str, weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    if weight.dim() != 2 or weight.shape[1] % group_size:
        raise ConversionError(f"{name} {tuple(weight.shape)}: in_features is not a multiple of {group_size}")
    packed, scale = quantize_rtn(weight, group_size)
    base = name.removesuffix(".weight")
    return {
        f"{base}.weight_packed": packed.contiguous(),
        f"{base}.weight_scale": scale.contiguous(),
        f"{base}.weight_shape": torch.tensor(weight.shape, dtype=torch.int32),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.quant.convert", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
