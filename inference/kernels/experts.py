"""Weight containers for one projection (w13 or w2) of all routed experts of one MoE layer.

`Int4Experts` holds the compressed-tensors tensors as loaded (`weight_packed [E, N, K/8]` int32,
`weight_scale [E, N, K/group]` bf16), which the native CPU kernel reads directly; only where that kernel
is unavailable does `prepare_cpu()` add a copy repacked for torch's CPU int4 ops. `DenseExperts` holds bf16
`[E, N, K]`, so the same `fused_moe_w4a16` call runs the bf16 baseline. w13 is gate and up stacked along N:
rows [0, I) are gate_proj, rows [I, 2I) are up_proj.
"""

from __future__ import annotations

import torch
from safetensors import SafetensorError

from inference.kernels import w4a16_cpu
from inference.quant.format import PACK_FACTOR, SUPPORTED_GROUP_SIZES, dequantize, unpack_int4
from inference.quant.quantize import quantize_rtn

# torch's CPU int4pack layout tiles N by 16; other N are padded with zero rows.
_CPU_N_TILE = 16


class Int4Experts:
    """Routed experts of one projection, int4 symmetric group-quantized (W4A16)."""

    def __init__(self, weight_packed: torch.Tensor, weight_scale: torch.Tensor, group_size: int = 32):
        if weight_packed.dtype != torch.int32 or weight_packed.dim() != 3:
            raise ValueError("weight_packed must be int32 [E, N, K/8]")
        if group_size not in SUPPORTED_GROUP_SIZES:
            raise ValueError(f"group size {group_size} not in {SUPPORTED_GROUP_SIZES}")
        e, n, words = weight_packed.shape
        k = words * PACK_FACTOR
        if weight_scale.shape != (e, n, k // group_size):
            raise ValueError(
                f"weight_scale {tuple(weight_scale.shape)} does not match {(e, n, k // group_size)}"
            )
        self.weight_packed = weight_packed  # [E, N, K/8] int32
        self.weight_scale = weight_scale  # [E, N, K/g]
        self.group_size = group_size
        # Only without the native kernel: [E, N', K/2] uint8, torch's int4pack layout.
        self.cpu_packed: torch.Tensor | None = None
        self.cpu_scales_and_zeros: torch.Tensor | None = None  # [E, K/g, N', 2] bf16

    @property
    def num_experts(self) -> int:
        return self.weight_packed.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight_packed.shape[1]

    @property
    def in_features(self) -> int:
        return self.weight_packed.shape[2] * PACK_FACTOR

    @property
    def device(self) -> torch.device:
        return self.weight_packed.device

    @classmethod
    def quantize(cls, weight: torch.Tensor, group_size: int = 32) -> Int4Experts:
        """Quantize dense experts [E, N, K] (round to nearest)."""
        packed, scale = quantize_rtn(weight, group_size)
        return cls(packed, scale, group_size)

    @classmethod
    def stack(cls, per_expert: list[tuple[torch.Tensor, torch.Tensor]], group_size: int = 32) -> Int4Experts:
        """Build from per-expert `(weight_packed [N, K/8], weight_scale [N, K/g])` as a checkpoint stores them."""
        return cls(
            torch.stack([p for p, _ in per_expert]), torch.stack([s for _, s in per_expert]), group_size
        )

    @classmethod
    def concat(cls, parts: list[Int4Experts]) -> Int4Experts:
        """Stack projections along N (gate and up into w13); packing runs along K, so this is exact."""
        if len({p.group_size for p in parts}) != 1:
            raise ValueError("cannot concatenate experts with different group sizes")
        return cls(
            torch.cat([p.weight_packed for p in parts], dim=1),
            torch.cat([p.weight_scale for p in parts], dim=1),
            parts[0].group_size,
        )

    def dequantize(self, dtype: torch.dtype = torch.bfloat16, expert: int | None = None) -> torch.Tensor:
        """Dense weights [E, N, K] (or [N, K] of one expert)."""
        if expert is None:
            return dequantize(self.weight_packed, self.weight_scale, self.group_size, dtype=dtype)
        return dequantize(self.weight_packed[expert], self.weight_scale[expert], self.group_size, dtype=dtype)

    def to_dense(self, dtype: torch.dtype = torch.bfloat16) -> DenseExperts:
        # Expert by expert: dequantizing all at once would hold a float32 copy of every expert.
        dense = torch.empty(
            (self.num_experts, self.out_features, self.in_features), dtype=dtype, device=self.device
        )
        for e in range(self.num_experts):
            dense[e] = self.dequantize(dtype, expert=e)
        return DenseExperts(dense)

    def prepare_cpu(self) -> Int4Experts:
        """Get ready for CPU matmuls, once at load (idempotent): contiguous tensors for the native kernel, or,
        where it is unavailable, a copy repacked for torch's int4 ops."""
        self.weight_packed = self.weight_packed.contiguous()
        self.weight_scale = self.weight_scale.contiguous()
        if w4a16_cpu.native() is None:
            self._repack_for_torch()
        return self

    def _repack_for_torch(self) -> None:
        """torch's CPU int4pack layout. Our nibble is value + 8 and torch's op computes
        (nibble - 8) * scale + zero, so the nibbles carry over unchanged with zero = 0."""
        if self.cpu_packed is not None:
            return
        e, n = self.num_experts, self.out_features
        n_pad = -n % _CPU_N_TILE
        packed, scales = [], []
        for i in range(e):
            nibbles = unpack_int4(self.weight_packed[i]).to(torch.int32) + 8  # [N, K] in [0, 15]
            scale = self.weight_scale[i].to(torch.float32)  # [N, K/g]
            if n_pad:
                nibbles = torch.nn.functional.pad(nibbles, (0, 0, 0, n_pad), value=8)
                scale = torch.nn.functional.pad(scale, (0, 0, 0, n_pad))
            packed.append(torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles.contiguous(), 2))
            scales.append(torch.stack([scale.t(), torch.zeros_like(scale.t())], dim=-1).to(torch.bfloat16))
        self.cpu_packed = torch.stack(packed)
        self.cpu_scales_and_zeros = torch.stack(scales).contiguous()
        self._cpu_views = list(
            zip(self.cpu_packed.unbind(0), self.cpu_scales_and_zeros.unbind(0), strict=True)
        )

    def cpu_expert(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(int4pack weight, scales_and_zeros) of expert e, for `_weight_int4pack_mm_for_cpu`."""
        self._repack_for_torch()
        return self._cpu_views[e]

    def __repr__(self) -> str:
        return (
            f"Int4Experts(experts={self.num_experts}, out={self.out_features}, in={self.in_features}, "
            f"group={self.group_size}, torch_int4pack={self.cpu_packed is not None})"
        )


class DenseExperts:
    """Routed experts of one projection as a dense tensor [E, N, K] (the bf16 baseline)."""

    def __init__(self, weight: torch.Tensor):
        if weight.dim() != 3:
            raise ValueError("weight must be [E, N, K]")
        self.weight = weight

    num_experts = property(lambda self: self.weight.shape[0])
    out_features = property(lambda self: self.weight.shape[1])
    in_features = property(lambda self: self.weight.shape[2])
    device = property(lambda self: self.weight.device)

    @classmethod
    def concat(cls, parts: list[DenseExperts]) -> DenseExperts:
        return cls(torch.cat([p.weight for p in parts], dim=1))

    def dequantize(self, dtype: torch.dtype = torch.bfloat16, expert: int | None = None) -> torch.Tensor:
        w = self.weight if expert is None else self.weight[expert]
        return w.to(dtype)

    def prepare_cpu(self) -> DenseExperts:
        return self

    def __repr__(self) -> str:
        return f"DenseExperts(experts={self.num_experts}, out={self.out_features}, in={self.in_features})"


Experts = Int4Experts | DenseExperts


def load_experts(
    get_tensor,
    prefix: str,
    num_experts: int,
    projections: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj"),
    group_size: int = 32,
) -> tuple[Experts, Experts]:
    """Read one MoE layer's routed experts from checkpoint tensors -> (w13, w2).

    `get_tensor(name)` returns a tensor by checkpoint name (e.g. a safetensors `safe_open(...).get_tensor`
    or `dict.__getitem__`); `prefix` is e.g. "model.layers.3.mlp.experts" (Mixtral:
    "model.layers.3.block_sparse_moe.experts" with projections ("w1", "w3", "w2")). INT4 checkpoints give
    `Int4Experts`, bf16 ones `DenseExperts`.
    """
    gate, up, down = projections

    def stacked(proj: str) -> Experts:
        names = [f"{prefix}.{e}.{proj}" for e in range(num_experts)]
        try:
            per_expert = [(get_tensor(f"{n}.weight_packed"), get_tensor(f"{n}.weight_scale")) for n in names]
        except (KeyError, SafetensorError):
            return DenseExperts(torch.stack([get_tensor(f"{n}.weight") for n in names]))
        return Int4Experts.stack(per_expert, group_size)

    w13_parts = [stacked(gate), stacked(up)]
    return type(w13_parts[0]).concat(w13_parts), stacked(down)
