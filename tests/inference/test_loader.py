"""Loading checkpoints: compressed-tensors INT4 experts (Kimi K2's format) read shard by shard through
the real loader, and the bundled GGUF default model with its tokenizer."""

import json

import httpx
import pytest
import torch
from inference_servers import byte_level_tokenizer, serve
from safetensors import safe_open
from safetensors.torch import save_file

from inference.engine.llm_engine import LLMEngine, generate
from inference.engine.loader import load_model, resolve_model_path, smollm2_gguf_path
from inference.engine.model_runner import ModelRunner
from inference.engine.sequence import SamplingParams, Sequence
from inference.kernels import Int4Experts
from inference.models import moe
from inference.quant import KIMI_K2_IGNORE, dequantize, pack_int4, quantization_config

transformers = pytest.importorskip("transformers")


def tiny_deepseek_v3(path):
    """A random DeepseekV3 (Kimi K2 shape in miniature) saved as a bf16 checkpoint with a tokenizer."""
    torch.manual_seed(0)
    tok = byte_level_tokenizer(["<|im_end|>"])
    cfg = transformers.DeepseekV3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        moe_intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        first_k_dense_replace=1,
        kv_lora_rank=32,
        q_lora_rank=None,
        qk_nope_head_dim=16,
        qk_rope_head_dim=16,
        v_head_dim=16,
        max_position_embeddings=512,
        routed_scaling_factor=2.5,
        eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    model = transformers.DeepseekV3ForCausalLM(cfg).to(torch.bfloat16)
    for name, param in model.named_parameters():
        if "experts" in name or "lm_head" in name or "embed" in name:
            param.data.normal_(0, 0.2)  # a random model whose next token depends on its input
    model.save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    return path


def quantize_power_of_two(weight, group_size=32):
    """Symmetric int4 with power-of-two scales: then every dequantized value (int4 times scale) is
    exact in bf16, so the bf16 twin holds precisely the INT4 model's weights."""
    groups = weight.float().reshape(weight.shape[0], -1, group_size)
    scale = torch.exp2(torch.ceil(torch.log2(groups.abs().amax(-1).clamp(min=1e-8) / 7)))  # [N, K/g]
    values = torch.round(groups / scale.unsqueeze(-1)).clamp(-8, 7).reshape(weight.shape).to(torch.int32)
    return pack_int4(values), scale.to(torch.bfloat16)


def split_int4_and_bf16_twin(src, int4_dir, bf16_dir, shards=2):
    """Write the INT4 checkpoint (routed experts pack-quantized, g32, over several shards with an index)
    and its bf16 twin whose expert weights are exactly the dequantized INT4 values."""
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    int4, twin = {}, {}
    for name, tensor in tensors.items():
        if ".mlp.experts." in name:
            packed, scale = quantize_power_of_two(tensor)
            base = name.removesuffix(".weight")
            int4 |= {
                f"{base}.weight_packed": packed,
                f"{base}.weight_scale": scale,
                f"{base}.weight_shape": torch.tensor(tensor.shape, dtype=torch.int32),
            }
            twin[name] = dequantize(packed, scale, 32, dtype=torch.bfloat16)
        else:
            int4[name] = twin[name] = tensor
    cfg = json.loads((src / "config.json").read_text())
    for out, state, extra in (
        (int4_dir, int4, {"quantization_config": quantization_config(32, ignore=KIMI_K2_IGNORE)}),
        (bf16_dir, twin, {}),
    ):
        out.mkdir()
        names = sorted(state)
        weight_map = {}
        for i in range(shards):
            part = names[i::shards]
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({n: state[n].contiguous() for n in part}, str(out / file))
            weight_map |= dict.fromkeys(part, file)
        (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        (out / "config.json").write_text(json.dumps(cfg | extra))
        (out / "tokenizer.json").write_text((src / "tokenizer.json").read_text())


def run(path, prompt_ids, dtype, n=12):
    """(loaded model, greedy tokens, logits of the prompt's last position)."""
    loaded = load_model(path, dtype)
    runner = ModelRunner(loaded.model, num_blocks=4, block_size=16, dtype=dtype)
    seq = Sequence(prompt_ids, SamplingParams())
    seq.block_table = [0, 1]
    with torch.inference_mode():
        logits = runner.prefill(seq, len(prompt_ids))[0]
    engine = LLMEngine(loaded, kv_cache_tokens=1024, dtype=dtype)
    try:
        tokens = generate(engine, prompt_ids, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
    finally:
        engine.shutdown()
    return loaded, tokens, logits


@pytest.fixture
def int4_and_twin(tmp_path):
    src = tiny_deepseek_v3(tmp_path / "src")
    split_int4_and_bf16_twin(src, tmp_path / "int4", tmp_path / "bf16")
    return tmp_path / "int4", tmp_path / "bf16"


def test_int4_deepseek_v3_generates_the_same_greedy_tokens_as_its_dequantized_bf16_twin(
    int4_and_twin, monkeypatch
):
    # The reference kernel (dequantize, then fp32 matmul) makes the two computations identical, so any
    # difference would be the loader's: packing, scales, gate/up order, expert stacking, sharding.
    monkeypatch.setattr(moe, "MOE_BACKEND", "reference")
    prompt = list(range(40, 60))
    int4_model, int4_tokens, int4_logits = run(int4_and_twin[0], prompt, torch.float32)
    _, twin_tokens, twin_logits = run(int4_and_twin[1], prompt, torch.float32)
    assert isinstance(int4_model.model.layers[1].mlp.experts.w13, Int4Experts)
    assert len(set(twin_tokens)) > 1
    assert int4_tokens == twin_tokens
    torch.testing.assert_close(int4_logits, twin_logits, atol=1e-4, rtol=0)


def test_int4_experts_on_the_cpu_int4_kernel_stay_within_bf16_noise_of_the_twin(int4_and_twin):
    prompt = list(range(40, 60))
    _, int4_tokens, int4_logits = run(int4_and_twin[0], prompt, torch.bfloat16, n=2)
    _, twin_tokens, twin_logits = run(int4_and_twin[1], prompt, torch.bfloat16, n=2)
    assert int4_logits.argmax() == twin_logits.argmax()
    assert (int4_logits - twin_logits).abs().max() < 0.03 * twin_logits.abs().max()


def test_default_model_falls_back_to_the_bundled_smollm2(monkeypatch, tmp_path):
    monkeypatch.setenv("KIMIWEB_MODEL_DIR", str(tmp_path / "not-built-yet"))
    assert resolve_model_path("default") == smollm2_gguf_path()
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "config.json").write_text("{}")
    monkeypatch.setenv("KIMIWEB_MODEL_DIR", str(tmp_path / "own"))
    assert resolve_model_path("default") == tmp_path / "own"


def test_kimi_mini_is_the_default_once_built_and_smollm2_on_request(monkeypatch, tmp_path, caplog):
    from inference.engine import loader

    monkeypatch.delenv("KIMIWEB_MODEL_DIR", raising=False)
    monkeypatch.delenv("KIMIWEB_DEFAULT_MODEL", raising=False)
    monkeypatch.setattr(loader, "KIMI_MINI_DIR", tmp_path / "kimi-mini")
    # Not built and not asked for by name: SmolLM2, with a warning that says how to build ours.
    assert resolve_model_path("default") == smollm2_gguf_path()
    assert "python -m kimi_mini build" in caplog.text
    # Asked for by name: an unbuilt kimi-mini is an error, not a silent substitute.
    monkeypatch.setenv("KIMIWEB_DEFAULT_MODEL", "kimi-mini")
    with pytest.raises(FileNotFoundError, match="python -m kimi_mini build"):
        resolve_model_path("default")
    (tmp_path / "kimi-mini").mkdir()
    (tmp_path / "kimi-mini" / "config.json").write_text("{}")
    assert resolve_model_path("default") == tmp_path / "kimi-mini"
    monkeypatch.delenv("KIMIWEB_DEFAULT_MODEL")
    assert resolve_model_path("default") == tmp_path / "kimi-mini"
    monkeypatch.setenv("KIMIWEB_DEFAULT_MODEL", "smollm2")
    assert resolve_model_path("default") == smollm2_gguf_path()
    monkeypatch.setenv("KIMIWEB_DEFAULT_MODEL", "gpt-5")
    with pytest.raises(ValueError, match="kimi-mini or smollm2"):
        resolve_model_path("default")


@pytest.mark.slow
def test_gguf_tokenizer_matches_transformers_reading_the_same_file():
    path = smollm2_gguf_path()
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = load_model(path, torch.bfloat16).tokenizer
    text = "<|im_start|>user\nWhat's 12345 + 678?  Ünïcødé\ttabs 日本語 <code>x=1</code><|im_end|>\n<|im_start|>assistant\n"
    assert ours.encode(text) == reference.encode(text, add_special_tokens=False)
    assert ours.decode(ours.encode(text)) == text
    assert ours.stop_ids == [0, 2]  # <|endoftext|>, <|im_end|>


@pytest.mark.parametrize("family", ["mixtral", "qwen3-moe"])
def test_int4_checkpoints_from_the_quantizer_load_and_match_transformers_on_the_same_weights(
    family, tmp_path, monkeypatch
):
    """`python -m inference quantize` output (what kimi-mini ships: Mixtral-style w1/w3/w2 names) loads
    through our loader and computes what transformers computes with the dequantized experts."""
    from inference.quant.convert import convert_checkpoint

    monkeypatch.setattr(moe, "MOE_BACKEND", "reference")
    torch.manual_seed(0)
    t = transformers
    common = dict(
        vocab_size=200,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    if family == "mixtral":
        cfg, cls = t.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **common), t.MixtralForCausalLM
    else:
        cfg = t.Qwen3MoeConfig(
            head_dim=16,
            moe_intermediate_size=64,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            **common,
        )
        cls = t.Qwen3MoeForCausalLM
    cls(cfg).save_pretrained(tmp_path / "bf16")
    byte_level_tokenizer(["<|im_end|>"]).save(str(tmp_path / "bf16" / "tokenizer.json"))
    convert_checkpoint(tmp_path / "bf16", tmp_path / "int4")

    # The reference: transformers on a bf16 checkpoint holding exactly the INT4 experts, dequantized.
    (tmp_path / "twin").mkdir()
    twin = {}
    for shard in sorted((tmp_path / "int4").glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for name in f.keys():
                base, _, suffix = name.rpartition(".")
                if suffix == "weight_packed":
                    twin[f"{base}.weight"] = dequantize(
                        f.get_tensor(name), f.get_tensor(f"{base}.weight_scale"), 32, dtype=torch.float32
                    )
                elif suffix not in ("weight_scale", "weight_shape"):
                    twin[name] = f.get_tensor(name)
    save_file(twin, str(tmp_path / "twin" / "model.safetensors"))
    (tmp_path / "twin" / "config.json").write_text((tmp_path / "bf16" / "config.json").read_text())
    reference = cls.from_pretrained(tmp_path / "twin", torch_dtype=torch.float32).eval()

    ids = list(range(30, 50))
    loaded, _, logits = run(tmp_path / "int4", ids, torch.float32, n=1)
    assert isinstance(loaded.model.layers[0].mlp.experts.w13, Int4Experts)
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_int4_experts_run_on_the_native_path_when_the_rest_of_the_model_is_float32(int4_and_twin):
    # The CPU kernel reads bf16 scales; --dtype float32 must not turn them into float32.
    prompt = list(range(40, 60))
    loaded, int4_tokens, int4_logits = run(int4_and_twin[0], prompt, torch.float32, n=2)
    _, twin_tokens, twin_logits = run(int4_and_twin[1], prompt, torch.float32, n=2)
    assert loaded.model.layers[1].mlp.experts.w13.weight_scale.dtype == torch.bfloat16
    assert int4_logits.dtype == torch.float32
    assert int4_logits.argmax() == twin_logits.argmax()
    assert (int4_logits - twin_logits).abs().max() < 0.03 * twin_logits.abs().max()


def test_an_int4_checkpoint_served_in_float32_answers(int4_and_twin):
    with serve(int4_and_twin[0], "--dtype", "float32", "--kv-cache-tokens", "1024") as url:
        reply = httpx.post(
            url + "/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=60,
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1
