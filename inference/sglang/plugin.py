"""SGLang plugin (entry point group `sglang.srt.plugins`): our Triton W4A16 MoE kernel for compressed-tensors.

SGLang calls `register()` in every process at start-up. When `KIMIWEB_INT4_MOE=1`, it hooks SGLang's
compressed-tensors W4A16 MoE scheme (`CompressedTensorsWNA16MoE`, what Kimi K2 Thinking loads as) through
its `HookRegistry`: after loading, weights are kept in the checkpoint's own int4 layout (instead of being
repacked for Marlin), and `apply_weights` runs `fused_moe_w4a16` on them. Without the variable, nothing
changes. The layout helpers below are plain torch so they are tested without SGLang.
"""

import logging
import os

import torch

from inference.kernels import Int4Experts, fused_moe_w4a16

logger = logging.getLogger(__name__)

ENABLE_ENV = "KIMIWEB_INT4_MOE"
SCHEME = "sglang.srt.layers.quantization.compressed_tensors.schemes.compressed_tensors_wNa16_moe.CompressedTensorsWNA16MoE"


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def register() -> bool:
    """Install the hooks if enabled; returns whether it did."""
    if not enabled():
        logger.info("kimiweb INT4 MoE plugin present but off (set %s=1 to enable)", ENABLE_ENV)
        return False
    try:
        from sglang.srt.plugins.hook_registry import HookRegistry, HookType
    except ImportError as exc:
        logger.warning(
            "%s=1 but SGLang's HookRegistry is not importable (%s); plugin not active", ENABLE_ENV, exc
        )
        return False
    HookRegistry.register(f"{SCHEME}.process_weights_after_loading", _process_weights_hook, HookType.AROUND)
    HookRegistry.register(f"{SCHEME}.apply_weights", _apply_weights_hook, HookType.AROUND)
    logger.info("kimiweb INT4 MoE plugin: compressed-tensors W4A16 MoE runs on the kimiweb Triton kernel")
    return True


def _process_weights_hook(original, scheme, layer) -> None:
    if scheme.strategy != "group" or scheme.num_bits != 4 or getattr(scheme, "actorder", None) == "group":
        logger.info(
            "kimiweb INT4 MoE: %s/%s-bit/actorder layer left to SGLang", scheme.strategy, scheme.num_bits
        )
        return original(scheme, layer)
    to_checkpoint_layout(layer)


def _apply_weights_hook(original, scheme, layer, dispatch_output):
    if not getattr(layer, "kimiweb_int4", False):
        return original(scheme, layer, dispatch_output)
    from sglang.srt.layers.moe.token_dispatcher import StandardCombineInput

    topk_weights, topk_ids = dispatch_output.topk_output[:2]
    expert_map = getattr(getattr(layer, "dispatcher", None), "local_expert_mapping", None)
    out = moe_forward(
        layer,
        dispatch_output.hidden_states,
        topk_weights,
        topk_ids,
        group_size=scheme.group_size,
        routed_scaling_factor=scheme.moe_runner_config.routed_scaling_factor,
        expert_map=expert_map,
    )
    return StandardCombineInput(hidden_states=out)


def to_checkpoint_layout(layer: torch.nn.Module) -> None:
    """SGLang loads W4A16 experts transposed (`w13_weight_packed [E, K/8, N]`, scales `[E, K/g, N]`);
    put them back in the checkpoint's `[E, N, K/8]` / `[E, N, K/g]`, the layout our kernel reads."""
    # Compare shapes, not just a flag: SGLang's weight reload resizes parameters back to its own layout.
    if getattr(layer, "kimiweb_int4_shape", None) == tuple(layer.w13_weight_packed.shape):
        return
    for name in ("w13_weight_packed", "w2_weight_packed", "w13_weight_scale", "w2_weight_scale"):
        param = getattr(layer, name)
        param.data = param.data.transpose(1, 2).contiguous()
    layer.kimiweb_int4 = True
    layer.kimiweb_int4_shape = tuple(layer.w13_weight_packed.shape)


def moe_forward(
    layer: torch.nn.Module,
    hidden: torch.Tensor,  # [M, H]
    topk_weights: torch.Tensor,  # [M, k]
    topk_ids: torch.Tensor,  # [M, k], global expert ids
    *,
    group_size: int,
    routed_scaling_factor: float | None = None,
    expert_map: torch.Tensor | None = None,  # global id -> local id, -1 where another rank holds it
    backend: str = "auto",
) -> torch.Tensor:
    w13 = Int4Experts(layer.w13_weight_packed.data, layer.w13_weight_scale.data, group_size)
    w2 = Int4Experts(layer.w2_weight_packed.data, layer.w2_weight_scale.data, group_size)
    ids = topk_ids.long()
    if expert_map is not None:
        ids = torch.where(ids >= 0, expert_map[ids.clamp_min(0)].long(), -1)
    # -1: padding, or an expert another rank holds (that rank adds its share); contribute nothing here.
    topk_weights = topk_weights.masked_fill(ids < 0, 0.0)
    topk_ids = ids.clamp_min(0)
    out = fused_moe_w4a16(hidden, w13, w2, topk_weights, topk_ids, backend=backend)
    if routed_scaling_factor is not None and routed_scaling_factor != 1.0:
        out = out * routed_scaling_factor
    return out
