"""Every CPU path of `fused_moe_w4a16` against the reference (dequantize + float32 matmul), including the
awkward routings: all tokens to one expert, experts with no tokens, one token, odd token counts."""

import pytest
import torch

from inference.kernels import DenseExperts, Int4Experts, cpu, fused_moe_w4a16, select_experts_softmax

# bf16 activations and a bf16 intermediate against a float32 oracle on the same int4 weights.
CPU_REL_ERR = 2e-2


def _rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _moe(experts=8, hidden=128, inter=96, group_size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    w13 = Int4Experts.quantize(torch.randn(experts, 2 * inter, hidden, generator=g) * 0.05, group_size)
    w2 = Int4Experts.quantize(torch.randn(experts, hidden, inter, generator=g) * 0.05, group_size)
    return w13, w2


def _route(m, experts, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return select_experts_softmax(torch.randn(m, experts, generator=g), k)


@pytest.mark.parametrize("m", [1, 2, 7, 33])
def test_cpu_int4_path_matches_reference(m):
    w13, w2 = _moe()
    weights, ids = _route(m, 8, 2)
    hidden = torch.randn(m, 128, dtype=torch.bfloat16)
    ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
    out = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu")
    assert out.shape == (m, 128) and out.dtype == torch.bfloat16
    assert _rel_err(out, ref) < CPU_REL_ERR


def test_all_tokens_to_one_expert_and_the_others_idle():
    w13, w2 = _moe()
    m = 9
    ids = torch.full((m, 1), 5)
    weights = torch.ones(m, 1)
    hidden = torch.randn(m, 128, dtype=torch.bfloat16)
    ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
    assert _rel_err(fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu"), ref) < CPU_REL_ERR


def test_routing_weights_scale_each_experts_contribution():
    w13, w2 = _moe()
    hidden = torch.randn(3, 128, dtype=torch.bfloat16)
    ids = torch.tensor([[1, 4]] * 3)
    one = fused_moe_w4a16(hidden, w13, w2, torch.tensor([[1.0, 0.0]] * 3), ids[:, :1].repeat(1, 2))
    half = fused_moe_w4a16(hidden, w13, w2, torch.tensor([[0.5, 0.5]] * 3), ids[:, :1].repeat(1, 2))
    assert _rel_err(half, one) < 1e-2


def test_large_expert_batches_switch_to_dequantize_and_bf16_gemm(monkeypatch):
    w13, w2 = _moe()
    weights, ids = _route(40, 8, 2, seed=1)
    hidden = torch.randn(40, 128, dtype=torch.bfloat16)
    ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
    monkeypatch.setattr(cpu, "DEQUANT_MIN_TOKENS", 4)  # most experts take the dequantize path, some not
    assert _rel_err(fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu"), ref) < CPU_REL_ERR


def test_out_features_not_a_multiple_of_16_are_padded_for_the_int4pack_layout():
    experts = Int4Experts.quantize(torch.randn(2, 40, 64) * 0.05)  # torch's int4pack tiles N by 16
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    y = cpu._linear(x, experts, 1)
    assert y.shape == (3, 40)
    assert _rel_err(y, x.float() @ experts.dequantize(torch.float32, expert=1).t()) < CPU_REL_ERR


def test_bf16_experts_run_through_the_same_call():
    w13, w2 = _moe()
    weights, ids = _route(5, 8, 3)
    hidden = torch.randn(5, 128, dtype=torch.bfloat16)
    d13, d2 = w13.to_dense(), w2.to_dense()
    assert isinstance(d13, DenseExperts)
    ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
    assert _rel_err(fused_moe_w4a16(hidden, d13, d2, weights, ids, backend="cpu"), ref) < CPU_REL_ERR
    assert _rel_err(fused_moe_w4a16(hidden, d13, d2, weights, ids, backend="reference"), ref) < 1e-2


def test_group_size_128_and_fp32_activations():
    w13, w2 = _moe(hidden=256, inter=128, group_size=128)
    weights, ids = _route(4, 8, 2)
    hidden = torch.randn(4, 256)
    out = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu")
    assert out.dtype == torch.float32
    assert _rel_err(out, fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")) < CPU_REL_ERR


def test_fusing_gate_and_up_stacks_rows_gate_first():
    gate = Int4Experts.quantize(torch.randn(2, 32, 64))
    up = Int4Experts.quantize(torch.randn(2, 32, 64))
    w13 = Int4Experts.concat([gate, up])
    assert w13.out_features == 64
    assert torch.equal(w13.dequantize()[:, :32], gate.dequantize())
    assert torch.equal(w13.dequantize()[:, 32:], up.dequantize())


def test_mismatched_shapes_and_unknown_options_are_refused():
    w13, w2 = _moe()
    hidden = torch.randn(2, 128, dtype=torch.bfloat16)
    weights, ids = _route(2, 8, 2)
    with pytest.raises(ValueError, match="hidden size"):
        fused_moe_w4a16(hidden[:, :64], w13, w2, weights, ids)
    with pytest.raises(ValueError, match="activation"):
        fused_moe_w4a16(hidden, w13, w2, weights, ids, activation="gelu")
    with pytest.raises(ValueError, match="backend"):
        fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cuda")
