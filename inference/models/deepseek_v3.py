"""DeepseekV3ForCausalLM (DeepSeek-V3, Kimi K2, Moonlight): multi-head latent attention (MLA) with
YaRN rotary, and MoE layers with shared experts and DeepSeek-V3 grouped routing.

The KV cache holds, per token, only the normalised latent c [R] and the rotated rope key k_pe [P];
attention runs in the latent space ("absorbed" form): queries are mapped through kv_b_proj's key half,
the output back through its value half, so cached tokens are never expanded per head."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from inference.kernels import select_experts_grouped
from inference.models.layers import ForwardBatch, RMSNorm, RotaryEmbedding, decode_attention, yarn_get_mscale
from inference.models.llama import MLP
from inference.models.moe import RoutedExperts, quant_group_size


class MLAttention(nn.Module):
    def __init__(self, cfg: dict, rope: RotaryEmbedding):
        super().__init__()
        hidden, eps = cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6)
        self.n_heads = cfg["num_attention_heads"]
        self.nope, self.rope_dim, self.v_dim = (
            cfg["qk_nope_head_dim"],
            cfg["qk_rope_head_dim"],
            cfg["v_head_dim"],
        )
        self.kv_rank, self.q_rank = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
        qk_dim = self.nope + self.rope_dim
        if self.q_rank:
            self.q_a_proj = nn.Linear(hidden, self.q_rank, bias=cfg.get("attention_bias", False))
            self.q_a_layernorm = RMSNorm(self.q_rank, eps)
            self.q_b_proj = nn.Linear(self.q_rank, self.n_heads * qk_dim, bias=False)
        else:
            self.q_proj = nn.Linear(hidden, self.n_heads * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(
            hidden, self.kv_rank + self.rope_dim, bias=cfg.get("attention_bias", False)
        )
        self.kv_a_layernorm = RMSNorm(self.kv_rank, eps)
        self.kv_b_proj = nn.Linear(self.kv_rank, self.n_heads * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.v_dim, hidden, bias=False)
        self.rope = rope
        self.scale = qk_dim**-0.5
        scaling = cfg.get("rope_scaling") or {}
        if scaling.get("mscale_all_dim"):
            m = yarn_get_mscale(scaling["factor"], scaling["mscale_all_dim"])
            self.scale *= m * m

    def forward(self, x: torch.Tensor, batch: ForwardBatch, layer_kv) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x) if not self.q_rank else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(b, t, self.n_heads, self.nope + self.rope_dim)
        q_nope, q_pe = q.split([self.nope, self.rope_dim], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_rank, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent)  # [B, T, R]
        q_pe, k_pe = self.rope(batch.positions, q_pe, k_pe.view(b, t, 1, self.rope_dim), interleaved=True)
        w = self.kv_b_proj.weight.view(self.n_heads, self.nope + self.v_dim, self.kv_rank)
        w_uk, w_uv = w[:, : self.nope], w[:, self.nope :]  # [H, Dn, R], [H, Dv, R]
        q_latent = torch.einsum("bthd,hdr->bthr", q_nope, w_uk)  # [B, T, H, R]
        query = torch.cat([q_latent, q_pe], dim=-1).transpose(1, 2)  # [B, H, T, R+P]
        key = torch.cat([latent.unsqueeze(2), k_pe], dim=-1)  # [B, T, 1, R+P]
        (cache,) = layer_kv
        cache.index_copy_(0, batch.write_slots.reshape(-1), key.reshape(-1, 1, key.shape[-1]).to(cache.dtype))
        if batch.read_blocks is None:
            keys = key.transpose(1, 2)  # [B, 1, T, R+P]
            out = F.scaled_dot_product_attention(
                query, keys, keys[..., : self.kv_rank], is_causal=True, scale=self.scale, enable_gqa=True
            )
        elif t == 1:
            keys = batch.gather(cache).to(query.dtype)  # [B, S, 1, R+P]
            out = decode_attention(
                query.transpose(1, 2), keys, keys[..., : self.kv_rank], batch.mask, self.scale
            )
            out = out.transpose(1, 2)  # [B, H, 1, R]
        else:
            keys = batch.gather(cache).to(query.dtype).transpose(1, 2)  # [B, 1, S, R+P]
            out = F.scaled_dot_product_attention(
                query,
                keys,
                keys[..., : self.kv_rank],
                attn_mask=batch.mask,
                scale=self.scale,
                enable_gqa=True,
            )
        out = torch.einsum("bhtr,hvr->bthv", out, w_uv)  # [B, T, H, Dv]
        return self.o_proj(out.reshape(b, t, -1))


class DeepseekMoE(nn.Module):
    def __init__(self, cfg: dict, dtype: torch.dtype):
        super().__init__()
        hidden, inter = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.top_k = cfg["num_experts_per_tok"]
        self.n_group, self.topk_group = cfg.get("n_group") or 1, cfg.get("topk_group") or 1
        self.scaling = cfg.get("routed_scaling_factor", 1.0)
        self.renormalize = cfg.get("norm_topk_prob", True)
        n_experts = cfg["n_routed_experts"]
        self.gate = nn.Linear(hidden, n_experts, bias=False)
        self.gate.e_score_correction_bias = nn.Parameter(torch.zeros(n_experts, dtype=torch.float32))
        self.experts = RoutedExperts(n_experts, hidden, inter, dtype, quant_group_size(cfg))
        shared = cfg.get("n_shared_experts") or 0
        self.shared_experts = MLP(hidden, inter * shared) if shared else None

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits = F.linear(x.float(), self.gate.weight.float())  # routing in fp32, as the reference does
        weights, ids = select_experts_grouped(
            logits,
            self.gate.e_score_correction_bias,
            self.top_k,
            self.n_group,
            self.topk_group,
            self.scaling,
            self.renormalize,
        )
        out = self.experts(x, weights, ids)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out.view(shape)


class DeepseekDecoderLayer(nn.Module):
    def __init__(self, cfg: dict, rope, index: int, dtype):
        super().__init__()
        eps = cfg.get("rms_norm_eps", 1e-6)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.self_attn = MLAttention(cfg, rope)
        freq = cfg.get("moe_layer_freq", 1) or 1
        is_moe = (
            cfg.get("n_routed_experts") and index >= cfg.get("first_k_dense_replace", 0) and index % freq == 0
        )
        self.mlp = DeepseekMoE(cfg, dtype) if is_moe else MLP(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x, batch, layer_kv):
        x = x + self.self_attn(self.input_layernorm(x), batch, layer_kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class DeepseekV3ForCausalLM(nn.Module):
    def __init__(self, cfg: dict, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.config = cfg
        rope = RotaryEmbedding(
            cfg["qk_rope_head_dim"],
            cfg.get("max_position_embeddings", 4096),
            cfg.get("rope_theta", 10000.0),
            cfg.get("rope_scaling"),
        )
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(
            DeepseekDecoderLayer(cfg, rope, i, dtype) for i in range(cfg["num_hidden_layers"])
        )
        self.norm = RMSNorm(cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6))
        self.tie_word_embeddings = cfg.get("tie_word_embeddings", False)
        self.lm_head = (
            None if self.tie_word_embeddings else nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        )

    def kv_cache_shapes(self) -> list[list[tuple[int, ...]]]:
        """Per layer one cache tensor: latent and rope key per token [1, R + P]."""
        width = self.config["kv_lora_rank"] + self.config["qk_rope_head_dim"]
        return [[(1, width)] for _ in self.layers]

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch, last_only: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        for layer, layer_kv in zip(self.layers, batch.kv, strict=True):
            x = layer(x, batch, layer_kv)
        x = self.norm(x[torch.arange(x.shape[0]), last_only])
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return (x @ weight.t()).float()

    _EXPERT = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(\w+)\.(\w+)$")

    def load_weight(self, name: str, tensor: torch.Tensor) -> bool:
        m = self._EXPERT.match(name)
        if m:
            self.layers[int(m[1])].mlp.experts.stage(int(m[2]), m[3], m[4], tensor)
            return True
        name = name.removeprefix("model.")
        if name == "lm_head.weight" and self.lm_head is None:
            return False
        if not hasattr(self, "_param_cache"):
            self._param_cache = dict(self.named_parameters())
        param = self._param_cache.get(name)
        if param is None:
            return False  # e.g. DeepSeek's multi-token-prediction layers, which we do not run
        if param.shape != tensor.shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(tensor)
        return True

    def finalize_weights(self) -> None:
        for module in list(self.modules()):
            if isinstance(module, RoutedExperts):
                module.finalize()
            elif isinstance(module, MLP):
                module.fuse()
        self.__dict__.pop("_param_cache", None)
