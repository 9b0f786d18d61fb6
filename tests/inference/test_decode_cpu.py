"""The native decode kernel on GGUF weights kept quantized: exact repacking of Q4_0/Q4_1/Q8_0 blocks, its
quantized-activation matmul against float32 on the dequantized weights, and the whole SmolLM2 forward pass
against our torch model on the same (dequantized) weights, through the paged cache, batched and alone."""

import gguf
import numpy as np
import pytest
import torch

from inference.engine.gguf_loader import gguf_config, gguf_raw_tensors, open_gguf
from inference.engine.llm_engine import LLMEngine, generate
from inference.engine.loader import load_model, smollm2_gguf_path
from inference.engine.model_runner import ModelRunner
from inference.engine.sequence import SamplingParams, Sequence
from inference.kernels import decode_cpu

kernel = decode_cpu.native()
pytestmark = pytest.mark.skipif(kernel is None, reason="native decode kernel not built or no AVX-512 VNNI")


def quantized(kind: str, n: int, k: int, seed: int = 0):
    """Random weights quantized by the gguf package: (raw blocks uint8 [n, bytes], their float32 values)."""
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[kind]
    raw = gguf.quants.quantize(w, qtype)
    values = gguf.quants.dequantize(raw, qtype).reshape(n, k)
    return torch.from_numpy(np.ascontiguousarray(raw)), torch.from_numpy(np.array(values, dtype=np.float32))


def repack(kind: str, raw, k):
    if kind == "Q8_0":
        return decode_cpu.Q8, kernel.repack_q8_0(raw, k)
    return decode_cpu.Q4, kernel.repack_q4(raw, k, kind == "Q4_1")


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_repacked_blocks_dequantize_to_exactly_what_gguf_dequantizes(kind):
    raw, values = quantized(kind, 48, 192)
    code, (qs, d, b) = repack(kind, raw, 192)
    torch.testing.assert_close(kernel.dequantize(code, qs, d, b, 192), values, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("m", [1, 3, 4, 9])
def test_linear_matches_float32_on_the_dequantized_weights(kind, m):
    raw, values = quantized(kind, 80, 320, seed=m)
    code, parts = repack(kind, raw, 320)
    x = torch.randn(m, 320, generator=torch.Generator().manual_seed(m))
    y = kernel.linear(x, code, *parts)
    expected = x @ values.t()
    # two int8 levels per activation block of 32: float rounding, not int8 rounding
    assert ((y - expected).norm() / expected.norm()).item() < 1e-3
    # a row's result does not depend on the other rows of the call
    torch.testing.assert_close(kernel.linear(x[-1:], code, *parts), y[-1:], atol=0, rtol=0)


def test_bad_raw_blocks_are_refused():
    raw, _ = quantized("Q4_1", 4, 64)
    with pytest.raises(RuntimeError, match="bytes"):
        kernel.repack_q4(raw[:, :-1].contiguous(), 64, True)
    with pytest.raises(RuntimeError, match="multiple of 64"):
        kernel.repack_q8_0(torch.zeros(4, 34, dtype=torch.uint8), 32)


@pytest.fixture(scope="module")
def models():
    """SmolLM2 twice: kept quantized and dequantized to float32 (loading both takes ~20 s on two cores)."""
    quant = load_model(smollm2_gguf_path(), torch.float32, quantized=True)
    dense = load_model(smollm2_gguf_path(), torch.float32, quantized=False)
    return quant, dense


@pytest.mark.slow  # loads SmolLM2 twice (module fixture, ~20 s on two cores)
def test_the_gguf_loads_quantized_when_the_kernel_is_there(models):
    quant, dense = models
    assert getattr(quant.model, "native", False)
    assert not getattr(dense.model, "native", False)
    cfg = gguf_config(open_gguf(smollm2_gguf_path()))
    kinds = {q for name, q, _, _ in gguf_raw_tensors(open_gguf(smollm2_gguf_path()), cfg) if "proj" in name}
    assert kinds == {"q4_1"}


@pytest.mark.slow  # loads SmolLM2 twice (module fixture, ~20 s on two cores)
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_native_forward_tracks_the_torch_model_through_the_paged_cache(models, cache_dtype):
    quant, dense = models
    ids = quant.tokenizer.encode(
        "<|im_start|>user\nWhat is the capital of France? Answer briefly.<|im_end|>\n"
    )
    n = len(ids)
    expected = []
    logits = []
    for loaded, out, dtype in ((dense, expected, torch.float32), (quant, logits, cache_dtype)):
        runner = ModelRunner(loaded.model, num_blocks=8, block_size=16, dtype=dtype)
        seq = Sequence(ids, SamplingParams())
        seq.block_table = [3, 1, 5]
        with torch.inference_mode():
            out.append(runner.prefill(seq, 9)[0])  # a chunk, then the rest attending to the cached keys
            out.append(runner.prefill(seq, n - 1, all_logits=True))
            seq.num_computed = n - 1
            out.append(runner.decode([seq])[0])
    # two int8 levels per activation block are within float rounding of float32; a bf16 cache is not
    tol = 2e-3 if cache_dtype == torch.float32 else 2e-2
    for got, want in zip(logits, expected, strict=True):
        rel = ((got - want).norm() / want.norm()).item()
        assert rel < tol, rel
    if cache_dtype == torch.float32:
        assert (logits[1].argmax(-1) == expected[1].argmax(-1)).all()


@pytest.mark.slow  # loads SmolLM2 twice (module fixture, ~20 s on two cores)
def test_a_rows_logits_do_not_depend_on_its_batch(models):
    quant, _ = models
    runner = ModelRunner(quant.model, num_blocks=16, block_size=16, dtype=torch.bfloat16)
    texts = ["Hello there", "The capital of France is", "1, 2, 3, 4,"]
    seqs = []
    for i, text in enumerate(texts):
        seq = Sequence(quant.tokenizer.encode(text), SamplingParams())
        seq.block_table = [2 * i, 2 * i + 1]
        with torch.inference_mode():
            runner.prefill(seq, len(seq) - 1)
        seqs.append(seq)
    with torch.inference_mode():
        together = runner.decode(seqs)
        for i, seq in enumerate(seqs):
            seq.num_computed = len(seq) - 1
            torch.testing.assert_close(runner.decode([seq])[0], together[i], atol=0, rtol=0)


@pytest.mark.slow  # loads SmolLM2 twice (module fixture, ~20 s on two cores)
def test_out_of_range_rows_are_refused_and_nothing_is_written(models):
    quant, _ = models
    runner = ModelRunner(quant.model, num_blocks=4, block_size=16, dtype=torch.float32)
    seq = Sequence([1, 2, 3], SamplingParams())
    seq.block_table = [7]  # beyond the 4 blocks of the cache
    with pytest.raises(RuntimeError, match="out of range"), torch.inference_mode():
        runner.prefill(seq, 3)
    assert all(t.abs().sum() == 0 for layer in runner.kv for t in layer)
    with pytest.raises(RuntimeError, match="token id"), torch.inference_mode():
        quant.model.forward_rows(
            torch.tensor([10**6]),
            torch.tensor([0]),
            torch.tensor([0]),
            torch.tensor([0]),
            torch.tensor([[0]]),
            16,
            runner.kv,
            torch.tensor([0]),
        )


@pytest.mark.slow  # loads SmolLM2 twice (module fixture, ~20 s on two cores)
def test_the_server_prompt_gets_the_float32_answer(models):
    """SmolLM2's activations have outlier channels: one int8 level per block flipped this greedy answer."""
    from inference.server.chat_templates import render_chat

    greedy = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    answers = []
    for loaded in models:
        text = render_chat(
            loaded.tokenizer.chat_template,
            [{"role": "user", "content": "What is the capital of France?"}],
            add_generation_prompt=True,
        )
        engine = LLMEngine(loaded, kv_cache_tokens=1024, dtype=torch.float32)
        try:
            answers.append(generate(engine, loaded.tokenizer.encode(text), greedy))
        finally:
            engine.shutdown()
    assert answers[0] == answers[1]
    assert "Paris" in models[0].tokenizer.decode(answers[0])


@pytest.mark.slow  # loads SmolLM2 twice (module fixture, ~20 s on two cores)
def test_engine_batches_native_streams_exactly_as_it_runs_them_alone(models):
    quant, _ = models
    engine = LLMEngine(quant, kv_cache_tokens=4096, dtype=torch.bfloat16)
    try:
        greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        prompts = [quant.tokenizer.encode(f"<|im_start|>user\nCount to {i}<|im_end|>\n") for i in range(4)]
        solo = [generate(engine, p, greedy) for p in prompts]
        results = [None] * len(prompts)
        import threading

        def one(i):
            results[i] = generate(engine, prompts[i], greedy)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == solo
    finally:
        engine.shutdown()
