"""Helpers for the inference tests: tiny checkpoints written to disk in the real formats, and a live
`python -m inference serve` subprocess on a free port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from inference.server.chat_templates import KIMI_K2_SPECIAL_TOKENS, KIMI_K2_TEMPLATE

REPO = Path(__file__).resolve().parents[2]

# What the scripted Kimi model says: each token determines the next one.
THINKING_CHAIN = [
    "<think>",
    "The user wants facts.",
    " I will search.",
    "<|tool_calls_section_begin|>",
    "<|tool_call_begin|>",
    "functions.web_search:0",
    "<|tool_call_argument_begin|>",
    '{"query": "kimi k2"}',
    "<|tool_call_end|>",
    "<|tool_calls_section_end|>",
    "<|im_end|>",
]
DIRECT_CHAIN = ["</think>", "Hello", " from the scripted model.", "<|im_end|>"]


def byte_level_tokenizer(special: list[str], pieces: list[str] = ()) -> Tokenizer:
    """Bytes as the base vocabulary (no merges), `special` as special tokens, `pieces` as whole tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.add_tokens([AddedToken(p, normalized=False) for p in pieces])
    return tok


def _write_llama(
    path: Path,
    tok: Tokenizer,
    state: dict,
    hidden: int,
    layers: int,
    heads: int,
    template: str,
    eos: int,
    **extra,
):
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads // 2,
        "vocab_size": tok.get_vocab_size(),
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "eos_token_id": eos,
        **extra,
    }
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "eos_token": "<|im_end|>"})
    )
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    return path


def _llama_state(vocab: int, hidden: int, layers: int, heads: int, init) -> dict:
    head_dim, kv = hidden // heads, heads // 2
    state = {
        "model.embed_tokens.weight": init(vocab, hidden),
        "model.norm.weight": torch.ones(hidden),
        "lm_head.weight": init(vocab, hidden),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        state |= {
            p + "input_layernorm.weight": torch.ones(hidden),
            p + "post_attention_layernorm.weight": torch.ones(hidden),
            p + "self_attn.q_proj.weight": init(hidden, hidden),
            p + "self_attn.k_proj.weight": init(kv * head_dim, hidden),
            p + "self_attn.v_proj.weight": init(kv * head_dim, hidden),
            p + "self_attn.o_proj.weight": init(hidden, hidden),
            p + "mlp.gate_proj.weight": init(2 * hidden, hidden),
            p + "mlp.up_proj.weight": init(2 * hidden, hidden),
            p + "mlp.down_proj.weight": init(hidden, 2 * hidden),
        }
    return state


def write_scripted_kimi_model(path: Path) -> Path:
    """A real Llama checkpoint in Kimi format whose greedy output is scripted: the embeddings are
    one-hot, every layer is zero (the residual stream carries the last token through), and lm_head maps
    each token of THINKING_CHAIN / DIRECT_CHAIN to the next. Thinking on → reasoning then a tool call;
    thinking off → a direct answer."""
    pieces = [p for p in THINKING_CHAIN + DIRECT_CHAIN if p not in KIMI_K2_SPECIAL_TOKENS]
    tok = byte_level_tokenizer(KIMI_K2_SPECIAL_TOKENS, pieces)
    vocab = tok.get_vocab_size()
    heads = 4
    hidden = -(-vocab // 8) * 8
    state = _llama_state(vocab, hidden, 1, heads, lambda *shape: torch.zeros(*shape))
    state["model.embed_tokens.weight"] = torch.eye(vocab, hidden)
    head = torch.zeros(vocab, hidden)
    eos = tok.token_to_id("<|im_end|>")
    head[eos, :] = 0.5  # anything unscripted ends the turn
    for chain in (THINKING_CHAIN, DIRECT_CHAIN):
        for a, b in zip(chain, chain[1:], strict=False):
            head[tok.token_to_id(b), tok.token_to_id(a)] = 1.0
    state["lm_head.weight"] = head
    return _write_llama(path, tok, state, hidden, 1, heads, KIMI_K2_TEMPLATE, eos)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_random_llama(path: Path, seed: int = 0) -> Path:
    """A tiny random Llama with a byte-level tokenizer: fast, and its outputs depend on the prompt."""
    tok = byte_level_tokenizer(["<|im_start|>", "<|im_end|>"])
    gen = torch.Generator().manual_seed(seed)
    state = _llama_state(
        tok.get_vocab_size(), 64, 2, 4, lambda *shape: torch.randn(*shape, generator=gen) * 0.3
    )
    return _write_llama(path, tok, state, 64, 2, 4, CHATML, tok.token_to_id("<|im_end|>"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model: str | Path, *extra: str, timeout: float = 180):
    """Run `python -m inference serve` until the block ends; yields the base URL (…/v1)."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "inference", "serve", "--model", str(model), "--port", str(port), *extra]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not become healthy")
            time.sleep(0.2)
        yield base + "/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
