"""Building blocks shared by the model families: RMSNorm, rotary embeddings (default, llama3, YaRN),
and attention over the engine's paged KV cache."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ForwardBatch:
    """Where each token's keys/values go and which cached tokens each row attends to.

    Rows are sequences; a prefill is one row of T tokens, a decode step is B rows of one token.
    """

    positions: torch.Tensor  # [B, T] absolute positions of the input tokens
    write_slots: torch.Tensor  # [B, T] flat cache slot of each input token
    read_blocks: torch.Tensor | None  # [B, NB] cache blocks each row attends to (padded), None: fresh prefill
    mask: torch.Tensor | None  # [B, 1, T, S = NB * block_size] True where attention is allowed
    kv: list[list[torch.Tensor]]  # per layer: the cache tensors, each [num_slots, ...]
    block_size: int = 16

    def gather(self, cache: torch.Tensor) -> torch.Tensor:
        """The cached entries each row attends to: [num_slots, ...] → [B, S, ...]. Whole blocks are
        copied at once, which is far cheaper than gathering token by token."""
        blocks = cache.view(-1, self.block_size, *cache.shape[1:])[self.read_blocks]  # [B, NB, bs, ...]
        return blocks.view(blocks.shape[0], -1, *cache.shape[1:])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # Reduced-precision inputs normalise in fp32 like the reference implementations.
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


def _yarn_find_correction_dim(num_rotations, dim, base, max_pos):
    return (dim * math.log(max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def _yarn_linear_ramp(low, high, dim):
    if low == high:
        high += 0.001
    ramp = (torch.arange(dim, dtype=torch.float32) - low) / (high - low)
    return ramp.clamp(0, 1)


def yarn_get_mscale(scale: float = 1.0, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


class RotaryEmbedding(nn.Module):
    """Neox-style (rotate-half) rotary embedding with the HF `rope_scaling` variants we serve."""

    def __init__(self, dim: int, max_position: int, base: float, scaling: dict | None = None):
        super().__init__()
        self.dim = dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        mscale = 1.0
        kind = (scaling or {}).get("rope_type") or (scaling or {}).get("type")
        if kind == "llama3":
            factor = scaling["factor"]
            low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
            old = scaling["original_max_position_embeddings"]
            wavelen = 2 * math.pi / inv_freq
            smooth = (old / wavelen - low) / (high - low)
            scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
            mid = (1 - smooth) * inv_freq / factor + smooth * inv_freq
            is_mid = (wavelen <= old / low) & (wavelen >= old / high)
            inv_freq = torch.where(is_mid, mid, scaled)
        elif kind == "yarn":
            factor = scaling["factor"]
            old = scaling["original_max_position_embeddings"]
            beta_fast, beta_slow = scaling.get("beta_fast", 32), scaling.get("beta_slow", 1)
            low = max(math.floor(_yarn_find_correction_dim(beta_fast, dim, base, old)), 0)
            high = min(math.ceil(_yarn_find_correction_dim(beta_slow, dim, base, old)), dim - 1)
            extrapolation = inv_freq
            interpolation = inv_freq / factor
            keep = 1 - _yarn_linear_ramp(low, high, dim // 2)
            inv_freq = interpolation * (1 - keep) + extrapolation * keep
            mscale = yarn_get_mscale(factor, scaling.get("mscale", 1)) / yarn_get_mscale(
                factor, scaling.get("mscale_all_dim", 0)
            )
        t = torch.arange(max_position, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # [P, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos() * mscale, persistent=False)
        self.register_buffer("sin", emb.sin() * mscale, persistent=False)
        self._last_positions = None
        self._last_cos_sin = None

    def forward(self, positions: torch.Tensor, *xs: torch.Tensor, interleaved: bool = False):
        """Rotate each x [B, T, H, D] at `positions` [B, T]."""
        if positions is not self._last_positions:  # every layer rotates at the same positions
            self._last_positions = positions
            self._last_cos_sin = (
                self.cos[positions].unsqueeze(2),
                self.sin[positions].unsqueeze(2),
            )  # [B, T, 1, D]
        cos, sin = self._last_cos_sin
        out = []
        for x in xs:
            dtype = x.dtype
            if interleaved:
                # DeepSeek checkpoints store rope dims interleaved (x0, y0, x1, y1, ...).
                b, t, h, d = x.shape
                x = x.view(b, t, h, d // 2, 2).transpose(3, 4).reshape(b, t, h, d)
            x1, x2 = x.chunk(2, dim=-1)
            rotated = torch.cat([-x2, x1], dim=-1)
            out.append((x * cos.to(dtype) + rotated * sin.to(dtype)).to(dtype))
        return out


def paged_attention(
    q: torch.Tensor,  # [B, T, H, D]
    k: torch.Tensor,  # [B, T, KVH, D]
    v: torch.Tensor,  # [B, T, KVH, Dv]
    layer_kv: list[torch.Tensor],  # [k_cache [N, KVH, D], v_cache [N, KVH, Dv]]
    batch: ForwardBatch,
    scale: float | None = None,
) -> torch.Tensor:  # [B, T, H, Dv]
    """Store this step's keys/values in the cache, then attend over the row's cached context."""
    k_cache, v_cache = layer_kv
    slots = batch.write_slots.reshape(-1)
    k_cache.index_copy_(0, slots, k.reshape(-1, *k.shape[2:]).to(k_cache.dtype))
    v_cache.index_copy_(0, slots, v.reshape(-1, *v.shape[2:]).to(v_cache.dtype))
    gqa = q.shape[2] != k.shape[2]
    if batch.read_blocks is None:
        # A prefill with nothing cached attends only to itself: plain causal attention.
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            scale=scale,
            enable_gqa=gqa,
        )
    elif q.shape[1] == 1:
        return decode_attention(q, batch.gather(k_cache), batch.gather(v_cache), batch.mask, scale)
    else:
        keys = batch.gather(k_cache).to(q.dtype)  # [B, S, KVH, D]
        values = batch.gather(v_cache).to(q.dtype)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            keys.transpose(1, 2),
            values.transpose(1, 2),
            attn_mask=batch.mask,
            scale=scale,
            enable_gqa=gqa,
        )
    return out.transpose(1, 2)


def decode_attention(
    q: torch.Tensor,  # [B, 1, H, D]
    keys: torch.Tensor,  # [B, S, KVH, D]
    values: torch.Tensor,  # [B, S, KVH, Dv]
    mask: torch.Tensor,  # [B, 1, 1, S]
    scale: float | None = None,
) -> torch.Tensor:  # [B, 1, H, Dv]
    """One query token per row as two batched matmuls; for a single query, torch's CPU flash
    attention kernel is several times slower than this."""
    b, _, h, d = q.shape
    kvh = keys.shape[2]
    scale = d**-0.5 if scale is None else scale
    qg = q.view(b, kvh, h // kvh, d)  # query heads grouped by the key head they share
    scores = torch.matmul(qg, keys.permute(0, 2, 3, 1)).float() * scale  # [B, KVH, G, S]
    scores = scores.masked_fill(~mask.view(b, 1, 1, -1), float("-inf"))
    probs = scores.softmax(dim=-1).to(values.dtype)
    out = torch.matmul(probs, values.transpose(1, 2))  # [B, KVH, G, Dv]
    return out.reshape(b, 1, h, -1)
