"""The SGLang plugin: its entry point metadata, that it stays off unless asked, that the layout it converts
SGLang's W4A16 MoE parameters to is what our kernel reads, and (where SGLang is installed) that it hooks."""

import importlib.metadata
import importlib.util

import pytest
import torch

from inference.kernels import Int4Experts, fused_moe_w4a16, select_experts_grouped
from inference.sglang import plugin

HAS_SGLANG = importlib.util.find_spec("sglang") is not None


def test_entry_point_is_declared_for_sglangs_general_plugin_group():
    eps = importlib.metadata.entry_points(group="sglang.srt.plugins")
    ours = [ep for ep in eps if ep.name == "kimiweb_int4_moe"]
    assert len(ours) == 1
    assert ours[0].value == "inference.sglang.plugin:register"
    assert ours[0].dist.name == "kimiweb"
    assert ours[0].load() is plugin.register


def test_plugin_does_nothing_unless_enabled(monkeypatch):
    monkeypatch.delenv(plugin.ENABLE_ENV, raising=False)
    assert plugin.register() is False


@pytest.mark.skipif(HAS_SGLANG, reason="checks the message for machines without SGLang")
def test_enabled_without_sglang_says_so_and_stays_off(monkeypatch, caplog):
    monkeypatch.setenv(plugin.ENABLE_ENV, "1")
    assert plugin.register() is False
    assert "not importable" in caplog.text


class _SGLangStyleMoELayer(torch.nn.Module):
    """Parameters named and shaped as SGLang's CompressedTensorsWNA16MoE.create_weights registers them
    (transposed on load: packed [E, K/8, N], scales [E, K/g, N])."""

    def __init__(self, w13: Int4Experts, w2: Int4Experts):
        super().__init__()

        def param(t):
            return torch.nn.Parameter(t.transpose(1, 2).contiguous(), requires_grad=False)

        self.w13_weight_packed = param(w13.weight_packed)
        self.w13_weight_scale = param(w13.weight_scale)
        self.w2_weight_packed = param(w2.weight_packed)
        self.w2_weight_scale = param(w2.weight_scale)


def _experts(e=6, hidden=64, inter=32):
    g = torch.Generator().manual_seed(0)
    w13 = Int4Experts.quantize(torch.randn(e, 2 * inter, hidden, generator=g) * 0.1)
    w2 = Int4Experts.quantize(torch.randn(e, hidden, inter, generator=g) * 0.1)
    return w13, w2


def test_sglang_layout_converts_back_to_the_checkpoint_layout_and_runs_our_kernel():
    w13, w2 = _experts()
    layer = _SGLangStyleMoELayer(w13, w2)
    plugin.to_checkpoint_layout(layer)
    plugin.to_checkpoint_layout(layer)  # idempotent: SGLang may process weights twice
    assert torch.equal(layer.w13_weight_packed, w13.weight_packed)
    assert torch.equal(layer.w2_weight_scale, w2.weight_scale)

    # A weight reload puts SGLang's transposed layout back; converting again must follow it.
    reloaded = _SGLangStyleMoELayer(w13, w2)
    for name in ("w13_weight_packed", "w2_weight_packed", "w13_weight_scale", "w2_weight_scale"):
        getattr(layer, name).data = getattr(reloaded, name).data
    plugin.to_checkpoint_layout(layer)
    assert torch.equal(layer.w13_weight_packed, w13.weight_packed)

    hidden = torch.randn(5, 64, dtype=torch.bfloat16)
    weights, ids = select_experts_grouped(torch.randn(5, 6), torch.zeros(6), 2, routed_scaling_factor=1.0)
    out = plugin.moe_forward(
        layer, hidden, weights, ids, group_size=32, routed_scaling_factor=2.5, backend="reference"
    )
    ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
    torch.testing.assert_close(out, ref * 2.5, rtol=2e-2, atol=1e-3)


def test_expert_parallel_ids_outside_this_rank_contribute_nothing():
    w13, w2 = _experts(e=3)
    layer = _SGLangStyleMoELayer(w13, w2)
    plugin.to_checkpoint_layout(layer)
    expert_map = torch.tensor([-1, -1, -1, 0, 1, 2])  # this rank holds global experts 3..5
    hidden = torch.randn(4, 64, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 3], [4, 1], [5, 2], [3, -1]])
    weights = torch.full((4, 2), 0.5)
    out = plugin.moe_forward(
        layer, hidden, weights, ids, group_size=32, expert_map=expert_map, backend="reference"
    )
    local_ids = torch.tensor([[0, 0], [1, 0], [2, 0], [0, 0]])
    local_weights = torch.tensor([[0.0, 0.5], [0.5, 0.0], [0.5, 0.0], [0.5, 0.0]])
    ref = fused_moe_w4a16(hidden, w13, w2, local_weights, local_ids, backend="reference")
    torch.testing.assert_close(out, ref)


@pytest.mark.skipif(not HAS_SGLANG, reason="SGLang is the optional [gpu] extra")
def test_enabled_plugin_hooks_the_compressed_tensors_w4a16_moe_scheme(monkeypatch):
    from sglang.srt.plugins.hook_registry import HookRegistry

    monkeypatch.setenv(plugin.ENABLE_ENV, "1")
    HookRegistry.reset()
    try:
        assert plugin.register() is True
        targets = set(HookRegistry._hooks)
        assert f"{plugin.SCHEME}.process_weights_after_loading" in targets
        assert f"{plugin.SCHEME}.apply_weights" in targets
    finally:
        HookRegistry.reset()
