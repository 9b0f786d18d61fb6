"""The kimi-mini network for training, in plain torch (gpt-fast style): Llama attention + a MoE feed-forward whose
experts are contiguous neuron blocks of the base FFN, LoRA adapters on every linear layer, and optional INT4
fake quantization (straight-through) of the routed experts for quantization-aware training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import KIMI_SPECIAL_TOKENS, BaseConfig


@dataclass
class MiniConfig:
    base_vocab: int = BaseConfig.vocab_size
    n_new_tokens: int = len(KIMI_SPECIAL_TOKENS)
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    intermediate: int = 1536
    n_experts: int = 8
    top_k: int = 6
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    lora_rank: int = 16
    lora_alpha: float = 32.0
    group_size: int = 32

    @property
    def vocab_size(self) -> int:
        return self.base_vocab + self.n_new_tokens

    @property
    def expert_size(self) -> int:
        return self.intermediate // self.n_experts


def fake_quant_int4(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """Symmetric INT4 round-to-nearest per group of `group_size` along the input dim, with a straight-through
    gradient: exactly the values the build writes, since both use `inference.quant.quantize_rtn`."""
    from inference.quant import dequantize, quantize_rtn

    packed, scale = quantize_rtn(w.detach(), group_size)
    q = dequantize(packed, scale, group_size, dtype=w.dtype)
    return w + (q - w).detach()


class LoRALinear(nn.Module):
    """A frozen base weight [N, K] plus a trainable low-rank delta B @ A (B starts at zero)."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # [N, K]
        n, k = weight.shape
        self.lora_a = nn.Parameter(torch.randn(rank, k) / math.sqrt(k))  # [r, K]
        self.lora_b = nn.Parameter(torch.zeros(n, rank))  # [N, r]
        self.scale = alpha / rank

    def merged(self) -> torch.Tensor:
        return self.weight + self.scale * (self.lora_b @ self.lora_a)

    def forward(self, x, fake_quant_group: int = 0):
        if fake_quant_group:
            return F.linear(x, fake_quant_int4(self.merged(), fake_quant_group))
        return F.linear(x, self.weight) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(weight), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg: MiniConfig, seq_len: int, start: int = 0):
    hd = cfg.dim // cfg.n_heads
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    f = torch.outer(torch.arange(start, start + seq_len, dtype=torch.float32), inv)
    emb = torch.cat([f, f], -1)  # [T, hd]
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):  # x [B, H, T, hd]
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


class Attention(nn.Module):
    def __init__(self, cfg: MiniConfig, w: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        r, a = cfg.lora_rank, cfg.lora_alpha
        self.q_proj = LoRALinear(w["q_proj"], r, a)
        self.k_proj = LoRALinear(w["k_proj"], r, a)
        self.v_proj = LoRALinear(w["v_proj"], r, a)
        self.o_proj = LoRALinear(w["o_proj"], r, a)

    def forward(self, x, cos, sin, past=None):
        """x [B, T, D]; past: (k, v) [B, Hkv, P, hd] of earlier positions (a shared prefix or a decode cache).
        Returns the output and this call's (k, v) including past."""
        b, t, _ = x.shape
        hd = self.cfg.dim // self.cfg.n_heads
        q = self.q_proj(x).view(b, t, self.cfg.n_heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.cfg.n_kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.cfg.n_kv_heads, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin).to(v.dtype), apply_rope(k, cos, sin).to(v.dtype)
        if past is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # [B, H, T, hd]
        else:
            pk, pv = past[0].to(k.dtype).expand(b, -1, -1, -1), past[1].to(v.dtype).expand(b, -1, -1, -1)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            p = k.shape[2] - t
            mask = torch.ones(t, p + t, dtype=torch.bool).tril(p) if t > 1 else None
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1)), (k, v)


class MoEFeedForward(nn.Module):
    """Mixtral-style MoE over the base FFN's (permuted) neurons: expert e owns neurons [e*S, (e+1)*S).
    Softmax router, top-k, weights renormalized, times top_k (so equal weights reproduce the dense FFN; the
    build folds that factor into w2). Training computes all experts densely and zeroes the unrouted ones:
    same math, simpler and faster than gathering on CPU at these sizes."""

    def __init__(self, cfg: MiniConfig, w: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        r, a = cfg.lora_rank, cfg.lora_alpha
        self.gate_proj = LoRALinear(w["gate_proj"], r, a)  # [I, D] -> experts' w1
        self.up_proj = LoRALinear(w["up_proj"], r, a)  # [I, D] -> w3
        self.down_proj = LoRALinear(w["down_proj"], r, a)  # [D, I] -> w2
        self.router = nn.Parameter(w["router"])  # [E, D]
        self.fake_quant = False
        self.dense = False  # True: all experts with weight 1 (the base model's FFN)

    def routing(self, x):  # x [N, D] -> gates [N, E] (zero where not routed)
        logits = F.linear(x, self.router)
        probs = logits.softmax(-1)
        top_w, top_i = probs.topk(self.cfg.top_k, -1)
        top_w = top_w / top_w.sum(-1, keepdim=True) * self.cfg.top_k
        return torch.zeros_like(probs).scatter(-1, top_i, top_w), logits

    def forward(self, x):  # x [B, T, D]
        g = self.cfg.group_size if self.fake_quant else 0
        h = F.silu(self.gate_proj(x, g)) * self.up_proj(x, g)  # [B, T, I]
        if not self.dense:
            gates, _ = self.routing(x)  # [B, T, E]
            h = (h.unflatten(-1, (self.cfg.n_experts, -1)) * gates.unsqueeze(-1)).flatten(-2)
        return self.down_proj(h, g)


class Block(nn.Module):
    def __init__(self, cfg, w):
        super().__init__()
        self.input_layernorm = RMSNorm(w["input_layernorm"], cfg.norm_eps)
        self.self_attn = Attention(cfg, w)
        self.post_attention_layernorm = RMSNorm(w["post_attention_layernorm"], cfg.norm_eps)
        self.mlp = MoEFeedForward(cfg, w)

    def forward(self, x, cos, sin, past=None):
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class KimiMini(nn.Module):
    """Embeddings are the frozen base table plus trainable rows for Kimi's new special tokens; tied lm_head."""

    def __init__(self, cfg: MiniConfig, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        self.embed_base = nn.Parameter(weights["model.embed_tokens.weight"], requires_grad=False)  # [V0, D]
        self.embed_new = nn.Parameter(weights["embed_new"])  # [V_new, D]
        self.layers = nn.ModuleList()
        for i in range(cfg.n_layers):
            p = f"model.layers.{i}."
            w = {
                k[len(p) :].split(".")[-2]: v
                for k, v in weights.items()
                if k.startswith(p) and k.endswith("weight")
            }
            w["router"] = weights[p + "mlp.router"]
            self.layers.append(Block(cfg, w))
        self.norm = RMSNorm(weights["model.norm.weight"], cfg.norm_eps)
        self.frozen_embedding = None

    def embedding(self) -> torch.Tensor:
        if self.frozen_embedding is not None:
            return self.frozen_embedding
        return torch.cat([self.embed_base, self.embed_new], 0)  # [V, D]

    def freeze_embedding(self):
        """For inference: concatenate the table once instead of on every call (56 MB per copy)."""
        self.frozen_embedding = torch.cat([self.embed_base, self.embed_new], 0).detach()

    def set_mode(self, fake_quant: bool | None = None, dense: bool | None = None):
        for layer in self.layers:
            if fake_quant is not None:
                layer.mlp.fake_quant = fake_quant
            if dense is not None:
                layer.mlp.dense = dense

    def run_layers(self, x, start: int, stop: int, pos: int = 0, past: list | None = None):
        """Layers [start, stop) on hidden x [B, T, D] at positions pos.. ; past[i] is layer start+i's cache.
        Returns the hidden states and each layer's (k, v)."""
        cos, sin = rope_tables(self.cfg, x.shape[1], pos)
        kvs = []
        for j, layer in enumerate(self.layers[start:stop]):
            x, kv = layer(x, cos, sin, past[j] if past else None)
            kvs.append(kv)
        return x, kvs

    def hidden(self, ids):  # ids [B, T] -> [B, T, D]
        x, _ = self.run_layers(F.embedding(ids, self.embedding()), 0, self.cfg.n_layers)
        return self.norm(x)

    def forward(self, ids):
        return F.linear(self.hidden(ids), self.embedding())  # [B, T, V]

    def logits(self, h):  # final-layer hidden [.., D] -> [.., V]
        return F.linear(self.norm(h), self.embedding())

    def loss(self, ids, mask):
        """Mean next-token cross-entropy over positions where `mask` (of the target token) is true; only those
        positions go through the [.., V] head, which is most of the cost on CPU."""
        h = self.hidden(ids[:, :-1])
        sel = mask[:, 1:]
        logits = F.linear(h[sel], self.embedding())
        return F.cross_entropy(logits, ids[:, 1:][sel])
