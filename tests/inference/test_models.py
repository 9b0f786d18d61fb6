"""Our model families compute what Hugging Face's reference implementations compute, through the
paged KV cache: a prefill in two chunks (the second attending to cached keys) and a decode step."""

import json

import pytest
import torch
from safetensors import safe_open

from inference.engine.model_runner import ModelRunner
from inference.engine.sequence import SamplingParams, Sequence
from inference.models import build_model

transformers = pytest.importorskip("transformers")

COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=256,
)


def configs():
    t = transformers
    return {
        "llama, tied embeddings": (
            t.LlamaConfig(num_key_value_heads=2, tie_word_embeddings=True, **COMMON),
            t.LlamaForCausalLM,
        ),
        "mixtral": (
            t.MixtralConfig(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, **COMMON),
            t.MixtralForCausalLM,
        ),
        "qwen3-moe": (
            t.Qwen3MoeConfig(
                num_key_value_heads=2,
                head_dim=16,
                moe_intermediate_size=32,
                num_experts=4,
                num_experts_per_tok=2,
                norm_topk_prob=True,
                **COMMON,
            ),
            t.Qwen3MoeForCausalLM,
        ),
        "deepseek-v3, MLA + YaRN + grouped routing": (
            t.DeepseekV3Config(
                num_key_value_heads=4,
                moe_intermediate_size=32,
                n_routed_experts=8,
                n_shared_experts=1,
                num_experts_per_tok=2,
                n_group=2,
                topk_group=1,
                first_k_dense_replace=1,
                kv_lora_rank=32,
                q_lora_rank=48,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=16,
                routed_scaling_factor=2.5,
                rope_scaling={
                    "type": "yarn",
                    "factor": 4.0,
                    "original_max_position_embeddings": 64,
                    "beta_fast": 32,
                    "beta_slow": 1,
                    "mscale": 1.0,
                    "mscale_all_dim": 1.0,
                },
                **COMMON,
            ),
            t.DeepseekV3ForCausalLM,
        ),
    }


@pytest.mark.parametrize("family", list(configs()))
def test_logits_match_hugging_face_through_the_paged_cache(family, tmp_path):
    torch.manual_seed(0)
    cfg, cls = configs()[family]
    reference = cls(cfg).eval()
    for name, param in reference.named_parameters():
        if "e_score_correction_bias" in name:  # zero at init; make the routing bias matter
            param.data.normal_(0, 0.1)
    reference.save_pretrained(tmp_path)
    model = build_model(json.loads((tmp_path / "config.json").read_text()), torch.float32)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        unused = [name for name in f.keys() if not model.load_weight(name, f.get_tensor(name).float())]
    model.finalize_weights()
    assert unused == [] or unused == ["lm_head.weight"]

    ids = torch.randint(0, 128, (20,))
    with torch.no_grad():
        expected = reference(ids[None]).logits[0].float()  # [T, V]
    runner = ModelRunner(model, num_blocks=8, block_size=16, dtype=torch.float32)
    whole = Sequence(ids.tolist(), SamplingParams())
    whole.block_table = [0, 1]
    part = Sequence(ids[:15].tolist(), SamplingParams())
    part.block_table = [2, 3]
    with torch.inference_mode():
        first_chunk = runner.prefill(whole, 12)[0]
        second_chunk = runner.prefill(whole, 20)[0]
        runner.prefill(part, 14)
        decoded = runner.decode([part])[0]
    # MoE experts run in bf16 (as the CPU kernel does); dense paths agree to float rounding.
    tol = 1e-4 if "llama" in family else 5e-3
    torch.testing.assert_close(first_chunk, expected[11], atol=tol, rtol=0)
    torch.testing.assert_close(second_chunk, expected[19], atol=tol, rtol=0)
    torch.testing.assert_close(decoded, expected[14], atol=tol, rtol=0)
