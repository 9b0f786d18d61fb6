"""The checkpoint converter on a tiny random DeepseekV3 checkpoint written by the test: routed experts come
out in Kimi K2's INT4 format, everything else is copied bit for bit, and the result loads back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from inference.kernels import DenseExperts, Int4Experts, fused_moe_w4a16, load_experts
from inference.quant import convert, quantization_config

HIDDEN, MOE_INTER, DENSE_INTER, EXPERTS, VOCAB = 64, 32, 96, 4, 50
REPO = Path(__file__).resolve().parents[2]


def _tiny_deepseek_v3(path: Path) -> dict[str, torch.Tensor]:
    """Two layers (one dense, one MoE with 4 routed + 1 shared expert) in two shards, plus tokenizer files."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.05).to(torch.bfloat16)

    shard1 = {
        "model.embed_tokens.weight": rand(VOCAB, HIDDEN),
        "model.layers.0.self_attn.q_proj.weight": rand(HIDDEN, HIDDEN),
        "model.layers.0.mlp.gate_proj.weight": rand(DENSE_INTER, HIDDEN),
        "model.layers.0.mlp.up_proj.weight": rand(DENSE_INTER, HIDDEN),
        "model.layers.0.mlp.down_proj.weight": rand(HIDDEN, DENSE_INTER),
        "model.layers.0.input_layernorm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
    }
    shard2 = {
        "model.layers.1.self_attn.q_proj.weight": rand(HIDDEN, HIDDEN),
        "model.layers.1.mlp.gate.weight": rand(EXPERTS, HIDDEN),
        "model.layers.1.mlp.gate.e_score_correction_bias": torch.zeros(EXPERTS, dtype=torch.float32),
        "model.layers.1.mlp.shared_experts.gate_proj.weight": rand(MOE_INTER, HIDDEN),
        "model.layers.1.mlp.shared_experts.up_proj.weight": rand(MOE_INTER, HIDDEN),
        "model.layers.1.mlp.shared_experts.down_proj.weight": rand(HIDDEN, MOE_INTER),
        "lm_head.weight": rand(VOCAB, HIDDEN),
    }
    for e in range(EXPERTS):
        prefix = f"model.layers.1.mlp.experts.{e}"
        shard2[f"{prefix}.gate_proj.weight"] = rand(MOE_INTER, HIDDEN)
        shard2[f"{prefix}.up_proj.weight"] = rand(MOE_INTER, HIDDEN)
        shard2[f"{prefix}.down_proj.weight"] = rand(HIDDEN, MOE_INTER)
    path.mkdir()
    save_file(shard1, path / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    save_file(shard2, path / "model-00002-of-00002.safetensors", metadata={"format": "pt"})
    weight_map = {name: "model-00001-of-00002.safetensors" for name in shard1}
    weight_map |= {name: "model-00002-of-00002.safetensors" for name in shard2}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "hidden_size": HIDDEN,
        "intermediate_size": DENSE_INTER,
        "moe_intermediate_size": MOE_INTER,
        "n_routed_experts": EXPERTS,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "num_hidden_layers": 2,
        "vocab_size": VOCAB,
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer_config.json").write_text('{"model_max_length": 128}')
    (path / "tiktoken.model").write_bytes(b"not really a tokenizer")
    return shard1 | shard2


def _load_all(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            tensors |= {name: f.get_tensor(name) for name in f.keys()}
    return tensors


def test_cli_quantizes_routed_experts_and_copies_everything_else(tmp_path):
    original = _tiny_deepseek_v3(tmp_path / "bf16")
    dst = tmp_path / "int4"
    result = subprocess.run(
        [sys.executable, "-m", "inference.quant.convert", str(tmp_path / "bf16"), str(dst)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "quantized 12 expert weights" in result.stdout
    assert "quantize" in result.stderr  # the tqdm progress bar

    config = json.loads((dst / "config.json").read_text())
    assert config["quantization_config"] == quantization_config(32)
    assert config["n_routed_experts"] == EXPERTS
    assert (dst / "tokenizer_config.json").read_text() == '{"model_max_length": 128}'
    assert (dst / "tiktoken.model").read_bytes() == b"not really a tokenizer"

    converted = _load_all(dst)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(converted)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in converted.values())

    for name, tensor in original.items():
        if ".mlp.experts." in name:
            base = name.removesuffix(".weight")
            assert name not in converted
            assert converted[f"{base}.weight_packed"].dtype == torch.int32
            assert converted[f"{base}.weight_packed"].shape == (tensor.shape[0], tensor.shape[1] // 8)
            assert converted[f"{base}.weight_scale"].shape == (tensor.shape[0], tensor.shape[1] // 32)
            assert converted[f"{base}.weight_shape"].tolist() == list(tensor.shape)
        else:  # attention, dense MLP, shared experts, router, norms, lm_head: untouched
            assert torch.equal(converted[name], tensor), name


def test_converted_experts_load_back_and_match_the_bf16_layer(tmp_path):
    original = _tiny_deepseek_v3(tmp_path / "bf16")
    assert convert.main([str(tmp_path / "bf16"), str(tmp_path / "int4")]) == 0
    prefix = "model.layers.1.mlp.experts"
    w13, w2 = load_experts(_load_all(tmp_path / "int4").__getitem__, prefix, EXPERTS)
    d13, d2 = load_experts(original.__getitem__, prefix, EXPERTS)
    assert isinstance(w13, Int4Experts) and isinstance(d13, DenseExperts)
    assert (w13.dequantize(torch.float32) - d13.weight.float()).norm() / d13.weight.float().norm() < 0.13

    torch.manual_seed(0)
    hidden = torch.randn(5, HIDDEN, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 1], [2, 3], [1, 2], [3, 0], [0, 2]])
    weights = torch.full((5, 2), 0.5)
    int4 = fused_moe_w4a16(hidden, w13, w2, weights, ids, backend="reference").float()
    bf16 = fused_moe_w4a16(hidden, d13, d2, weights, ids, backend="reference").float()
    assert (int4 - bf16).norm() / bf16.norm() < 0.2  # 4-bit RTN error through two layers


def test_python_m_inference_quantize_dispatches_to_the_converter(tmp_path):
    _tiny_deepseek_v3(tmp_path / "bf16")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference",
            "quantize",
            str(tmp_path / "bf16"),
            str(tmp_path / "int4"),
            "--group-size",
            "32",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "int4" / "config.json").read_text())
    assert config["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] == 32


def test_refuses_a_non_empty_destination_and_unsupported_architectures(tmp_path, capsys):
    _tiny_deepseek_v3(tmp_path / "bf16")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert convert.main([str(tmp_path / "bf16"), str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err

    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (tmp_path / "bf16" / "config.json").write_text(json.dumps(config))
    assert convert.main([str(tmp_path / "bf16"), str(tmp_path / "out")]) == 2
    assert "not supported" in capsys.readouterr().err


def test_a_group_size_that_does_not_divide_in_features_is_refused_before_writing(tmp_path, capsys):
    _tiny_deepseek_v3(tmp_path / "bf16")  # the experts' down_proj has in_features 32
    assert convert.main([str(tmp_path / "bf16"), str(tmp_path / "int4"), "--group-size", "64"]) == 2
    assert "not a multiple of 64" in capsys.readouterr().err
    assert not (tmp_path / "int4").exists()


@pytest.mark.parametrize(
    ("arch", "name", "quantized"),
    [
        ("MixtralForCausalLM", "model.layers.0.block_sparse_moe.experts.3.w2.weight", True),
        ("MixtralForCausalLM", "model.layers.0.block_sparse_moe.gate.weight", False),
        ("Qwen3MoeForCausalLM", "model.layers.0.mlp.experts.7.up_proj.weight", True),
        ("Qwen3MoeForCausalLM", "model.layers.0.mlp.gate.weight", False),
        ("DeepseekV3ForCausalLM", "model.layers.5.mlp.shared_experts.down_proj.weight", False),
        ("DeepseekV3ForCausalLM", "model.layers.0.mlp.down_proj.weight", False),
    ],
)
def test_only_routed_expert_weights_are_quantized(arch, name, quantized):
    assert bool(convert.ROUTED_EXPERT[arch].search(name)) is quantized
