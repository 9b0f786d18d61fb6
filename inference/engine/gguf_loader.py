"""Read a llama-architecture GGUF file: its hyperparameters as a Hugging Face style config, and its
tensors dequantized (the `gguf` package's quants) under Hugging Face names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def open_gguf(path: Path):
    import gguf

    return gguf.GGUFReader(str(path))


def gguf_config(reader) -> dict:
    """Map `llama.*` metadata onto the config.json keys our models read."""
    fields = reader.fields
    arch = bytes(fields["general.architecture"].parts[-1]).decode()
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r} is not supported (only 'llama')")

    def get(key, default=None):
        f = fields.get(f"{arch}.{key}")
        return default if f is None else f.parts[-1][0].item()

    names = {t.name for t in reader.tensors}
    vocab = get("vocab_size") or len(fields["tokenizer.ggml.tokens"].data)
    name = bytes(fields["general.name"].parts[-1]).decode() if "general.name" in fields else "model"
    return {
        "architectures": ["LlamaForCausalLM"],
        "name": name,
        "hidden_size": get("embedding_length"),
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": get("attention.head_count"),
        "num_key_value_heads": get("attention.head_count_kv"),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": get("rope.freq_base", 10000.0),
        "max_position_embeddings": get("context_length", 4096),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in names,
    }


def gguf_tensors(reader, cfg: dict) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (hf_name, float32 tensor). llama.cpp stores Q and K rows permuted for its interleaved
    rotary layout; undo that so our rotate-half rotary applies."""
    from gguf.quants import dequantize

    n_heads, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for t in reader.tensors:
        data = dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape))
        tensor = torch.from_numpy(np.array(data, dtype=np.float32).reshape(shape))
        parts = t.name.split(".")
        if parts[0] == "blk":
            short = parts[2]
            name = f"model.layers.{parts[1]}.{_LAYER_NAMES[short]}.{parts[-1]}"
            if short == "attn_q":
                tensor = _unpermute(tensor, n_heads)
            elif short == "attn_k":
                tensor = _unpermute(tensor, n_kv)
        else:
            name = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}[
                parts[0]
            ]
            name = f"{name}.{parts[-1]}"
        yield name, tensor


def _unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


# GGUF quant types the native decode kernel reads as they are: name -> (kernel kind, bytes per 32 weights).
NATIVE_QUANTS = {"Q4_0": ("q4_0", 18), "Q4_1": ("q4_1", 20), "Q8_0": ("q8_0", 34)}


def gguf_raw_tensors(reader, cfg: dict) -> Iterator[tuple[str, str, torch.Tensor, tuple[int, ...]]]:
    """Yield (hf_name, quant, data, shape): quant is "q4_0", "q4_1" or "q8_0" with data the GGUF blocks as
    uint8 [rows, bytes per row], or "f32" with data the dequantized float32 tensor. Q and K rows are
    unpermuted as in `gguf_tensors` (whole rows move, so the blocks stay exact)."""
    from gguf.quants import dequantize

    n_heads, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        kind = t.tensor_type.name
        if kind in NATIVE_QUANTS and len(shape) == 2:
            quant = NATIVE_QUANTS[kind][0]
            data = torch.from_numpy(np.array(t.data, dtype=np.uint8).reshape(shape[0], -1))
        else:
            quant = "f32"
            data = torch.from_numpy(
                np.array(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
            )
        name = hf_name(t.name)
        if name.endswith("q_proj.weight"):
            data = _unpermute_rows(data, n_heads)
        elif name.endswith("k_proj.weight"):
            data = _unpermute_rows(data, n_kv)
        yield name, quant, data, shape


def hf_name(gguf_name: str) -> str:
    """blk.3.attn_q.weight → model.layers.3.self_attn.q_proj.weight, token_embd.weight → model.embed_tokens.weight"""
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[-1]}"
    base = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}[parts[0]]
    return f"{base}.{parts[-1]}"


def _unpermute_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows = w.shape[0]
    perm = torch.arange(rows).view(n_heads, rows // n_heads // 2, 2).transpose(1, 2).reshape(-1)
    return w[perm].contiguous()
