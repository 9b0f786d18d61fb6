"""Every CPU path of `fused_moe_w4a16` against the reference (dequantize + float32 matmul), including the
awkward routings: all tokens to one expert, experts with no tokens, one token, odd token counts; and each
kernel of the native W4A16 extension on its own."""

import dataclasses
import json
import logging

import pytest
import torch

from inference.kernels import (
    DenseExperts,
    Int4Experts,
    cpu,
    fused_moe_w4a16,
    select_experts_softmax,
    w4a16_cpu,
)

# bf16 activations and a bf16 intermediate against a float32 oracle on the same int4 weights.
CPU_REL_ERR = 2e-2


# The native dot kernel multiplies the exact int4 weights in fp32: only the bf16 output is rounded (2^-8).
NATIVE_DOT_REL_ERR = 4e-3
# The AMX and dequantize + GEMM kernels round the dequantized weights to bf16 first, as the bf16 baseline does.
NATIVE_BF16_WEIGHTS_REL_ERR = 8e-3


@pytest.fixture(scope="module")
def native():
    """The native kernel, built here if setup has not (a build failure fails the test, as it should in CI)."""
    if not w4a16_cpu.build().cpu_supported():
        pytest.skip("this CPU lacks AVX-512 BF16")
    w4a16_cpu.native.cache_clear()
    kernel = w4a16_cpu.native()
    assert kernel is not None, "the kernel was built but native() does not load it"
    return kernel


@pytest.fixture
def torch_int4pack(monkeypatch):
    """Switch the native kernel off, as KIMIWEB_MOE_CPU_KERNEL=torch does in a deployment."""
    monkeypatch.setenv(w4a16_cpu.KERNEL_ENV, "torch")
    w4a16_cpu.native.cache_clear()
    yield
    monkeypatch.undo()
    w4a16_cpu.native.cache_clear()


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


def test_large_expert_batches_switch_to_dequantize_and_bf16_gemm(monkeypatch, torch_int4pack):
    w13, w2 = _moe()
    weights, ids = _route(40, 8, 2, seed=1)
    hidden = torch.randn(40, 128, dtype=torch.bfloat16)
    ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
    monkeypatch.setattr(cpu, "DEQUANT_MIN_TOKENS", 4)  # most experts take the dequantize path, some not
    assert _rel_err(fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu"), ref) < CPU_REL_ERR


def test_out_features_not_a_multiple_of_16_are_padded_for_the_int4pack_layout(torch_int4pack):
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


# ---- the native W4A16 kernel ----


@pytest.mark.parametrize("kernel", ["native", "torch"])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("m", [1, 2, 7, 40])
def test_moe_through_each_cpu_kernel_matches_reference(request, native, kernel, group_size, m):
    if kernel == "torch":
        request.getfixturevalue("torch_int4pack")
    w13, w2 = _moe(hidden=256, inter=128, group_size=group_size)
    weights, ids = _route(m, 8, 2, seed=m)
    hidden = torch.randn(m, 256, dtype=torch.bfloat16)
    ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
    assert _rel_err(fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu"), ref) < CPU_REL_ERR


def test_native_moe_refuses_an_expert_id_outside_the_layer(native):
    w13, w2 = _moe(experts=4)
    hidden = torch.randn(2, 128, dtype=torch.bfloat16)
    weights, ids = torch.full((2, 2), 0.5), torch.tensor([[0, 1], [2, 4]])
    with pytest.raises(RuntimeError, match=r"expert id 4 is outside \[0, 4\)"):
        fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu")


def test_native_kernel_keeps_one_copy_of_the_weights_and_the_fallback_repacks(request, native):
    w13, w2 = _moe()
    weights, ids = _route(3, 8, 2)
    hidden = torch.randn(3, 128, dtype=torch.bfloat16)
    fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu")
    assert w13.cpu_packed is None and w2.cpu_packed is None
    request.getfixturevalue("torch_int4pack")
    fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu")
    assert w13.cpu_packed is not None


def test_missing_build_falls_back_to_torch_with_a_log_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(w4a16_cpu, "EXTENSION", dataclasses.replace(w4a16_cpu.EXTENSION, build_root=tmp_path))
    w4a16_cpu.native.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=w4a16_cpu.__name__):
            assert w4a16_cpu.native() is None
        assert "not built" in caplog.text
        w13, w2 = _moe()
        weights, ids = _route(2, 8, 2)
        hidden = torch.randn(2, 128, dtype=torch.bfloat16)
        ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
        assert _rel_err(fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu"), ref) < CPU_REL_ERR
    finally:
        monkeypatch.undo()
        w4a16_cpu.native.cache_clear()


KERNELS = {
    "dot": (lambda ext, x, p, s, g: ext.w4a16_dot(x, p, s, g), NATIVE_DOT_REL_ERR),
    "amx": (lambda ext, x, p, s, g: ext.w4a16_amx(x, p, s, g), NATIVE_BF16_WEIGHTS_REL_ERR),
    "tile": (lambda ext, x, p, s, g: ext.w4a16_tile(x, p, s, g), NATIVE_BF16_WEIGHTS_REL_ERR),
    "linear": (lambda ext, x, p, s, g: ext.w4a16_linear(x, p, s, g, 8), NATIVE_BF16_WEIGHTS_REL_ERR),
}


# N = 40 and 17: not a multiple of the 16-row tile, the 32-row block nor the 4-row block. K = 96: ends on half
# a 64-element chunk and on 12 of the tile kernel's 16 words. Tokens: 1, odd, past the 4 per weight load of
# the dot kernel, past the tile kernel's 12 per pass, past one 16-token AMX tile and the 4 an AMX pass holds.
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("n, k, group_size", [(40, 96, 32), (17, 256, 32), (40, 192, 64), (40, 256, 128)])
@pytest.mark.parametrize("c", [1, 3, 5, 17, 70])
def test_each_native_kernel_matches_the_dequantized_product(native, kernel, n, k, group_size, c):
    if kernel == "amx" and not native.amx_supported():
        pytest.skip("this CPU has no AMX-BF16")
    run, tolerance = KERNELS[kernel]
    experts = Int4Experts.quantize(torch.randn(2, n, k) * 0.05, group_size)
    x = torch.randn(c, k).to(torch.bfloat16)
    y = run(native, x, experts.weight_packed[1], experts.weight_scale[1], group_size)
    assert y.shape == (c, n) and y.dtype == torch.bfloat16
    assert _rel_err(y, x.float() @ experts.dequantize(torch.float32, expert=1).t()) < tolerance


def test_native_kernel_runs_on_all_of_torchs_threads(native):
    # Built without OpenMP, at::parallel_for runs serially and the kernel uses one core of the machine.
    if torch.get_num_threads() < 2:
        pytest.skip("torch runs one thread here")
    assert native.parallel_threads() == torch.get_num_threads()


def test_native_dequantize_equals_the_format_reference(native):
    experts = Int4Experts.quantize(torch.randn(1, 40, 96) * 0.05, 32)
    dense = native.w4a16_dequantize(experts.weight_packed[0], experts.weight_scale[0], 32)
    assert torch.equal(dense, experts.dequantize(torch.bfloat16, expert=0))


def test_native_kernel_refuses_mismatched_shapes(native):
    experts = Int4Experts.quantize(torch.randn(1, 40, 96) * 0.05, 32)
    with pytest.raises(RuntimeError, match="K=64"):
        native.w4a16_linear(
            torch.randn(2, 64).to(torch.bfloat16), experts.weight_packed[0], experts.weight_scale[0], 32, 8
        )


# Full-width rows of Kimi K2 (K = 7168) and Moonlight (K = 1408) experts, a few rows of each; token counts
# around the tile kernel's 12 per pass and a many-token one.
@pytest.mark.parametrize("n, k", [(48, 7168), (40, 1408), (24, 2048)])
@pytest.mark.parametrize("c", [4, 12, 25, 64])
def test_tile_kernel_matches_the_dequantized_product_at_model_widths(native, n, k, c):
    experts = Int4Experts.quantize(torch.randn(1, n, k) * 0.05, 32)
    x = torch.randn(c, k).to(torch.bfloat16)
    y = native.w4a16_tile(x, experts.weight_packed[0], experts.weight_scale[0], 32)
    # The weights it multiplies are the bf16 baseline's: the same product in fp32 differs only by summation order.
    dense = experts.dequantize(torch.bfloat16, expert=0).float()
    assert _rel_err(y, x.float() @ dense.t()) < NATIVE_DOT_REL_ERR
    assert (
        _rel_err(y, x.float() @ experts.dequantize(torch.float32, expert=0).t()) < NATIVE_BF16_WEIGHTS_REL_ERR
    )


@pytest.mark.parametrize("crossover", ["1", "100000"])
@pytest.mark.parametrize("m", [1, 5, 40])
def test_moe_on_each_side_of_the_crossover_matches_reference(native, monkeypatch, crossover, m):
    monkeypatch.setenv(w4a16_cpu.CROSSOVER_ENV, crossover)  # every expert on the many-token path, or none
    w4a16_cpu.many_token_crossover.cache_clear()
    try:
        assert cpu.many_token_crossover() == int(crossover)
        w13, w2 = _moe(hidden=256, inter=128)
        weights, ids = _route(m, 8, 2, seed=m)
        hidden = torch.randn(m, 256, dtype=torch.bfloat16)
        ref = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference")
        assert _rel_err(fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="cpu"), ref) < CPU_REL_ERR
    finally:
        monkeypatch.undo()
        w4a16_cpu.many_token_crossover.cache_clear()


@pytest.fixture
def crossover_file(monkeypatch, tmp_path):
    """The crossover cached in a fresh file, measured on small weights (they need not leave the caches here)."""
    monkeypatch.delenv(w4a16_cpu.CROSSOVER_ENV, raising=False)
    monkeypatch.setattr(w4a16_cpu, "CROSSOVER_FILE", tmp_path / "crossover.json")
    monkeypatch.setattr(w4a16_cpu, "CROSSOVER_WEIGHT_BYTES", 4 << 20)
    monkeypatch.setattr(w4a16_cpu, "CROSSOVER_CANDIDATES", (2, 8, 32))
    w4a16_cpu.many_token_crossover.cache_clear()
    yield tmp_path / "crossover.json"
    monkeypatch.undo()
    w4a16_cpu.many_token_crossover.cache_clear()


def test_crossover_is_measured_once_and_cached_per_cpu_and_build(native, crossover_file):
    value = w4a16_cpu.many_token_crossover()
    assert value in (2, 8, 32, 33)
    cached = json.loads(crossover_file.read_text())
    assert cached == {w4a16_cpu.crossover_key(native): value}
    assert w4a16_cpu.build_name() in w4a16_cpu.crossover_key(native)
    # A cached value is used as it is (5 is none of the candidates, so no measurement returns it).
    crossover_file.write_text(json.dumps({w4a16_cpu.crossover_key(native): 5, "another CPU | build": 9}))
    w4a16_cpu.many_token_crossover.cache_clear()
    assert w4a16_cpu.many_token_crossover() == 5


def test_an_unreadable_crossover_file_is_measured_again_with_a_log_line(native, crossover_file, caplog):
    crossover_file.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=w4a16_cpu.__name__):
        value = w4a16_cpu.many_token_crossover()
    assert "unreadable" in caplog.text
    assert json.loads(crossover_file.read_text()) == {w4a16_cpu.crossover_key(native): value}


@pytest.mark.parametrize("bad", ["eight", "0"])
def test_a_bad_crossover_override_is_refused(monkeypatch, bad):
    monkeypatch.setenv(w4a16_cpu.CROSSOVER_ENV, bad)
    w4a16_cpu.many_token_crossover.cache_clear()
    try:
        with pytest.raises(ValueError, match=w4a16_cpu.CROSSOVER_ENV):
            w4a16_cpu.many_token_crossover()
    finally:
        monkeypatch.undo()
        w4a16_cpu.many_token_crossover.cache_clear()
