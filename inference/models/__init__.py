"""Model families the CPU engine runs, chosen by the checkpoint's `architectures` entry."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def model_class(cfg: dict):
    from inference.models.llama import LlamaForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM

    families = {
        "LlamaForCausalLM": LlamaForCausalLM,
        "MistralForCausalLM": LlamaForCausalLM,
        "MixtralForCausalLM": MixtralForCausalLM,
        "Qwen3MoeForCausalLM": Qwen3MoeForCausalLM,
    }
    from inference.models.deepseek_v3 import DeepseekV3ForCausalLM

    families["DeepseekV3ForCausalLM"] = families["KimiK2ForCausalLM"] = DeepseekV3ForCausalLM
    for arch in cfg.get("architectures") or ["LlamaForCausalLM"]:
        if arch in families:
            return families[arch]
    raise ValueError(f"unsupported architecture {cfg.get('architectures')}; supported: {sorted(families)}")


@contextlib.contextmanager
def _uninitialised(dtype: torch.dtype):
    """Allocate parameters in `dtype` without the random init the checkpoint overwrites anyway."""
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters, torch.get_default_dtype()
    nn.Linear.reset_parameters = lambda self: None
    nn.Embedding.reset_parameters = lambda self: None
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved[0], saved[1]
        torch.set_default_dtype(saved[2])


def normalize_config(cfg: dict) -> dict:
    """transformers 5 writes `rope_parameters` ({rope_theta, rope_type, factor, ...}) where older
    checkpoints (Kimi K2's among them) have `rope_theta` and `rope_scaling`; models read the latter."""
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict):
        cfg = dict(cfg)
        if "rope_theta" in rope:
            cfg.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            cfg.setdefault("rope_scaling", rope)
    return cfg


def build_model(cfg: dict, dtype: torch.dtype) -> nn.Module:
    """An empty model of the right family in `dtype`, ready for `load_weight` calls."""
    cfg = normalize_config(cfg)
    with _uninitialised(dtype):
        model = model_class(cfg)(cfg, dtype=dtype)
    return model.eval().requires_grad_(False)
