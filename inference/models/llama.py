"""Llama-family decoder (LlamaForCausalLM) and its MoE variants that keep Llama attention
(MixtralForCausalLM, Qwen3MoeForCausalLM). Weight names follow the Hugging Face checkpoints."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from inference.kernels import select_experts_softmax
from inference.models.layers import ForwardBatch, RMSNorm, RotaryEmbedding, paged_attention
from inference.models.moe import RoutedExperts, quant_group_size


class Attention(nn.Module):
    def __init__(self, cfg: dict, rope: RotaryEmbedding, qk_norm: bool):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads") or self.n_heads
        self.head_dim = cfg.get("head_dim") or hidden // self.n_heads
        bias = cfg.get("attention_bias", False)
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=False)
        self.rope = rope
        eps = cfg.get("rms_norm_eps", 1e-6)
        self.q_norm = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps) if qk_norm else None

        self.qkv_proj: nn.Linear | None = None  # q, k and v stacked after loading: one matmul, not three

    def fuse(self) -> None:
        parts = (self.q_proj, self.k_proj, self.v_proj)
        fused = nn.Linear(1, 1, bias=self.q_proj.bias is not None)
        fused.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        if fused.bias is not None:
            fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
        self.qkv_proj = fused
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, batch: ForwardBatch, layer_kv) -> torch.Tensor:
        b, t, _ = x.shape
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(b, t, self.n_heads, self.head_dim)
        k = k.view(b, t, self.n_kv, self.head_dim)
        v = v.view(b, t, self.n_kv, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rope(batch.positions, q, k)
        out = paged_attention(q, k, v, layer_kv, batch)  # [B, T, H, D]
        return self.o_proj(out.reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

        self.gate_up_proj: nn.Linear | None = None  # gate and up stacked after loading

    def fuse(self) -> None:
        fused = nn.Linear(1, 1, bias=False)
        fused.weight = nn.Parameter(
            torch.cat([self.gate_proj.weight, self.up_proj.weight]), requires_grad=False
        )
        self.gate_up_proj = fused
        del self.gate_proj, self.up_proj

    def forward(self, x):
        if self.gate_up_proj is None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class SparseMoE(nn.Module):
    """Mixtral / Qwen3-MoE block: softmax router over E experts, top-k, SwiGLU experts."""

    def __init__(self, cfg: dict, dtype: torch.dtype):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.num_experts = cfg.get("num_local_experts") or cfg["num_experts"]
        self.top_k = cfg["num_experts_per_tok"]
        self.renormalize = cfg.get("norm_topk_prob", True)
        intermediate = cfg.get("moe_intermediate_size") or cfg["intermediate_size"]
        self.gate = nn.Linear(hidden, self.num_experts, bias=False)
        self.experts = RoutedExperts(self.num_experts, hidden, intermediate, dtype, quant_group_size(cfg))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, ids = select_experts_softmax(self.gate(x), self.top_k, self.renormalize)
        return self.experts(x, weights, ids).view(shape)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: dict, rope, moe: bool, qk_norm: bool, dtype):
        super().__init__()
        eps = cfg.get("rms_norm_eps", 1e-6)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.self_attn = Attention(cfg, rope, qk_norm)
        self.moe = moe
        if moe:
            self.mlp = SparseMoE(cfg, dtype)
        else:
            self.mlp = MLP(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x, batch, layer_kv):
        x = x + self.self_attn(self.input_layernorm(x), batch, layer_kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaForCausalLM(nn.Module):
    moe = False
    qk_norm = False

    def __init__(self, cfg: dict, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = cfg
        n_heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_heads
        max_pos = cfg.get("max_position_embeddings", 8192)
        rope = RotaryEmbedding(head_dim, max_pos, cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling"))
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, rope, self._layer_is_moe(cfg, i), self.qk_norm, dtype)
            for i in range(cfg["num_hidden_layers"])
        )
        self.norm = RMSNorm(cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6))
        self.tie_word_embeddings = cfg.get("tie_word_embeddings", False)
        self.lm_head = (
            None if self.tie_word_embeddings else nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        )
        self.head_dim, self.n_kv = head_dim, cfg.get("num_key_value_heads") or n_heads

    def _layer_is_moe(self, cfg, i) -> bool:
        if not self.moe:
            return False
        step = cfg.get("decoder_sparse_step", 1) or 1
        return i not in (cfg.get("mlp_only_layers") or []) and (i + 1) % step == 0

    def kv_cache_shapes(self) -> list[list[tuple[int, ...]]]:
        """Per layer, the per-token shapes of the cache tensors (here: keys and values)."""
        return [[(self.n_kv, self.head_dim), (self.n_kv, self.head_dim)] for _ in self.layers]

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch, last_only: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] → logits [B, V] (float32) at the positions `last_only` [B] picks in each row
        (None: every position, [B * T, V])."""
        x = self.embed_tokens(input_ids)
        for layer, layer_kv in zip(self.layers, batch.kv, strict=True):
            x = layer(x, batch, layer_kv)
        if last_only is None:
            x = x.reshape(-1, x.shape[-1])
        else:
            x = x[torch.arange(x.shape[0]), last_only]  # [B, H]
        x = self.norm(x)
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return (x @ weight.t()).float()

    # ---- loading ---------------------------------------------------------------------------------

    _EXPERT = re.compile(r"model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(\w+)\.(\w+)$")

    def load_weight(self, name: str, tensor: torch.Tensor) -> bool:
        """Place one checkpoint tensor; returns False for names this model does not use."""
        m = self._EXPERT.match(name)
        if m:
            layer, expert, proj, suffix = int(m[1]), int(m[2]), m[3], m[4]
            self.layers[layer].mlp.experts.stage(expert, proj, suffix, tensor)
            return True
        name = name.removeprefix("model.").replace("block_sparse_moe.", "mlp.")
        if name == "lm_head.weight" and self.lm_head is None:
            return False
        params = self._params()
        if name not in params:
            return False
        param = params[name]
        if param.shape != tensor.shape:
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(tensor)
        return True

    def _params(self):
        if not hasattr(self, "_param_cache"):
            self._param_cache = dict(self.named_parameters())
        return self._param_cache

    def finalize_weights(self) -> None:
        """After the last `load_weight`: stack experts, fuse projections that read the same input."""
        for module in list(self.modules()):
            if isinstance(module, RoutedExperts):
                module.finalize()
            elif isinstance(module, Attention | MLP):
                module.fuse()
        self.__dict__.pop("_param_cache", None)


class MixtralForCausalLM(LlamaForCausalLM):
    moe = True


class Qwen3MoeForCausalLM(LlamaForCausalLM):
    moe = True
    qk_norm = True


class QuantizedLlamaForCausalLM(nn.Module):
    """A Llama whose GGUF weights stay quantized (Q4_0, Q4_1, Q8_0) and whose whole forward pass is one
    native call (`inference.kernels.decode_cpu`): the engine hands it rows (one token each) and gets the
    logits of the rows it asks for. Built by `from_gguf`; the torch modules above are not used."""

    native = True

    def __init__(self, cfg: dict, kernel, handle, keep: list):
        super().__init__()
        self.config = cfg
        n_heads = cfg["num_attention_heads"]
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_heads
        self.n_kv = cfg.get("num_key_value_heads") or n_heads
        self.num_layers = cfg["num_hidden_layers"]
        self.kernel, self.handle = kernel, handle
        self._keep = keep  # the repacked tensors the handle reads

    def kv_cache_shapes(self) -> list[list[tuple[int, ...]]]:
        return [[(self.n_kv, self.head_dim), (self.n_kv, self.head_dim)] for _ in range(self.num_layers)]

    def forward_rows(self, ids, positions, slots, row_seq, tables, block_size, kv, logit_rows, profile=False):
        """Rows of one token each: ids/positions/slots/row_seq int64 [R], tables int64 [S, NB] (row r reads
        sequence row_seq[r]'s blocks and attends to its positions 0..positions[r]) → float32 [L, V]."""
        return self.handle.forward(
            ids,
            positions,
            slots,
            row_seq,
            tables,
            block_size,
            [layer[0] for layer in kv],
            [layer[1] for layer in kv],
            logit_rows,
            profile,
        )

    @classmethod
    def supports(cls, cfg: dict, quants: dict[str, str]) -> str | None:
        """None when the kernel can run this checkpoint, else why not."""
        if cfg.get("architectures", ["LlamaForCausalLM"])[0] not in (
            "LlamaForCausalLM",
            "MistralForCausalLM",
        ):
            return f"architecture {cfg.get('architectures')}"
        if (
            cfg.get("rope_scaling")
            or cfg.get("attention_bias")
            or cfg.get("head_dim", 0)
            not in (
                0,
                cfg["hidden_size"] // cfg["num_attention_heads"],
            )
        ):
            return "rope scaling, attention bias or a custom head_dim"
        head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
        if cfg["hidden_size"] % 64 or cfg["intermediate_size"] % 64 or head_dim % 32:
            return "hidden or intermediate size not a multiple of 64, or head_dim not of 32"
        bad = sorted(
            {q for name, q in quants.items() if name.endswith("proj.weight") or "embed" in name} - _NATIVE
        )
        if bad:
            return f"weights in {bad}"
        if "lm_head.weight" in quants and quants["lm_head.weight"] not in _NATIVE:
            return f"lm_head in {quants['lm_head.weight']}"
        return None

    @classmethod
    def from_gguf(cls, cfg: dict, tensors, kernel) -> QuantizedLlamaForCausalLM:
        """tensors: (hf_name, quant, data, shape) as `gguf_loader.gguf_raw_tensors` yields them."""
        raw = {name: (quant, data, shape) for name, quant, data, shape in tensors}
        keep: list[torch.Tensor] = []

        def packed(name):
            quant, data, shape = raw[name]
            if quant == "q8_0":
                parts = kernel.repack_q8_0(data, shape[1])
            else:
                parts = kernel.repack_q4(data, shape[1], quant == "q4_1")
            return (1 if quant == "q8_0" else 0), list(parts)

        def stacked(names):
            kinds, parts = zip(*(packed(n) for n in names), strict=True)
            if len(set(kinds)) != 1:  # one matrix, one kind: requantize nothing, fall back instead
                raise ValueError(f"{names} mix quant types")
            out = [torch.cat([p[i] for p in parts]) for i in range(3)]
            keep.extend(out)
            return kinds[0], out

        n_heads = cfg["num_attention_heads"]
        head_dim = cfg["hidden_size"] // n_heads
        rope = RotaryEmbedding(
            head_dim, cfg.get("max_position_embeddings", 8192), cfg.get("rope_theta", 10000.0)
        )
        half = head_dim // 2
        handle = kernel.QuantLlama(
            cfg["hidden_size"],
            cfg["intermediate_size"],
            n_heads,
            cfg.get("num_key_value_heads") or n_heads,
            head_dim,
            float(cfg.get("rms_norm_eps", 1e-6)),
            rope.cos[:, :half].contiguous(),
            rope.sin[:, :half].contiguous(),
            raw["model.norm.weight"][1].float(),
        )
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            att = [p + f"self_attn.{x}_proj.weight" for x in "qkv"]
            k_qkv, qkv = stacked(att)
            k_o, o = stacked([p + "self_attn.o_proj.weight"])
            k_gu, gu = stacked([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"])
            k_d, down = stacked([p + "mlp.down_proj.weight"])
            handle.add_layer(
                raw[p + "input_layernorm.weight"][1].float(),
                raw[p + "post_attention_layernorm.weight"][1].float(),
                qkv,
                o,
                gu,
                down,
                [k_qkv, k_o, k_gu, k_d],
            )
        kind, emb = stacked(["model.embed_tokens.weight"])
        handle.set_embeddings(kind, *emb)
        if "lm_head.weight" in raw and not cfg.get("tie_word_embeddings", False):
            kind, head = stacked(["lm_head.weight"])
            handle.set_lm_head(kind, *head)
        return cls(cfg, kernel, handle, keep)


_NATIVE = {"q4_0", "q4_1", "q8_0"}
