"""Benchmark of the CPU engine: the default model against Hugging Face `transformers` generate() on
the same weights, 8 concurrent streams, a 30-round agent loop with and without the prefix cache, and a
Moonlight-shaped MoE (fewer layers, random weights) with INT4 vs bf16 experts.

    .venv/bin/python bench/engine.py                  # everything, about 10 minutes on 2 busy cores
    .venv/bin/python bench/engine.py --only default agent --rounds 10 --clock wall

`--clock cpu` (default) times with this process's CPU time, so other people's processes on a shared
machine inflate the figures less than they would wall time; run with `--threads 1` for it to mean what
it says. `--clock wall --threads 2` measures the machine as deployed (both cores, OpenMP workers included).
llama-cpp-python is benchmarked when it is importable (it is not installed by default).

Results: bench/results/engine.md (newest first).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.engine.llm_engine import LLMEngine  # noqa: E402
from inference.engine.loader import LoadedModel, load_model, smollm2_gguf_path  # noqa: E402
from inference.engine.sequence import SamplingParams  # noqa: E402

CLOCK = time.process_time
ROWS: list[tuple[str, str, float, str]] = []  # (section, what, value, unit)


def row(section, what, value, unit):
    ROWS.append((section, what, value, unit))
    print(f"  {section:<10} {what:<58} {value:>10.2f} {unit}", flush=True)


def chat_prompt(tokenizer, text):
    return tokenizer.encode(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def timed_request(engine: LLMEngine, prompt_ids, max_tokens):
    """(time to first token, decode tokens/s after it) of one greedy request, by CLOCK."""
    stamps, done = [], threading.Event()

    def on_token(seq, token, reason):
        if token is not None:
            stamps.append(CLOCK())
        if reason is not None:
            done.set()

    start = CLOCK()
    engine.submit(prompt_ids, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True), on_token)
    done.wait()
    ttft = stamps[0] - start
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return ttft, rate


def concurrent_rate(engine: LLMEngine, prompts, max_tokens):
    """Aggregate generated tokens/s with all prompts submitted at once."""
    remaining, done, count = [len(prompts)], threading.Event(), [0]
    lock = threading.Lock()

    def on_token(seq, token, reason):
        with lock:
            count[0] += token is not None
            if reason is not None:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

    start = CLOCK()
    for p in prompts:
        engine.submit(p, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True), on_token)
    done.wait()
    return count[0] / (CLOCK() - start)


# ---- the default model --------------------------------------------------------------------------


def hf_twin(loaded: LoadedModel, dtype):
    """transformers' LlamaForCausalLM holding exactly the weights our engine serves."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from inference.engine.gguf_loader import gguf_tensors, open_gguf

    cfg = {k: v for k, v in loaded.config.items() if k not in ("architectures", "name")}
    config = LlamaConfig(**cfg)
    with torch.device("meta"):  # skip the random init; every weight is assigned below
        model = LlamaForCausalLM(config)
    state = {name: t.to(dtype) for name, t in gguf_tensors(open_gguf(loaded.path), loaded.config)}
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.model.rotary_emb = LlamaRotaryEmbedding(config)  # computed buffers, not weights
    return model.to(dtype).eval()


def hf_request(model, prompt_ids, max_tokens):
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        start = CLOCK()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)
        ttft = CLOCK() - start
        start = CLOCK()
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            do_sample=False,
        )
        total = CLOCK() - start
    return ttft, (max_tokens - 1) / max(total - ttft, 1e-9)


def hf_batch_rate(model, tokenizer_prompts, max_tokens):
    lengths = [len(p) for p in tokenizer_prompts]
    longest = max(lengths)
    ids = torch.tensor([[2] * (longest - n) + p for p, n in zip(tokenizer_prompts, lengths, strict=True)])
    mask = torch.tensor([[0] * (longest - n) + [1] * n for n in lengths])
    with torch.inference_mode():
        start = CLOCK()
        model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=2,
        )
        return len(tokenizer_prompts) * max_tokens / (CLOCK() - start)


def llama_cpp_request(prompt_ids, max_tokens, n_threads):
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(smollm2_gguf_path()), n_ctx=4096, n_threads=n_threads, verbose=False)
    start = CLOCK()
    llm(llm.detokenize(prompt_ids).decode(errors="ignore"), max_tokens=1)
    ttft = CLOCK() - start
    start = CLOCK()
    llm(llm.detokenize(prompt_ids).decode(errors="ignore"), max_tokens=max_tokens)
    return ttft, (max_tokens - 1) / max(CLOCK() - start - ttft, 1e-9)


QUESTIONS = [
    "What is the capital of France?",
    "Explain photosynthesis briefly.",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Who painted the Mona Lisa?",
    "What is machine learning?",
    "Describe a cat in one sentence.",
    "How far is the Moon?",
]


def bench_default(args, dtype):
    print(f"\nDefault model (SmolLM2-135M-Instruct, {dtype}), {args.tokens} generated tokens per request")
    loaded = load_model(smollm2_gguf_path(), dtype)
    engine = LLMEngine(loaded, kv_cache_tokens=32768, dtype=dtype)
    prompt = chat_prompt(loaded.tokenizer, QUESTIONS[0])
    timed_request(engine, prompt, 4)  # warm-up
    ours = [timed_request(engine, prompt, args.tokens) for _ in range(args.repeat)]
    ours_ttft, ours_rate = min(t for t, _ in ours), max(r for _, r in ours)
    hf = hf_twin(loaded, dtype)
    hf_request(hf, prompt, 4)
    theirs = [hf_request(hf, prompt, args.tokens) for _ in range(args.repeat)]
    hf_ttft, hf_rate = min(t for t, _ in theirs), max(r for _, r in theirs)
    row("default", "kimiweb engine: single-stream decode", ours_rate, "tok/s")
    row("default", "transformers generate(): single-stream decode", hf_rate, "tok/s")
    row("default", "  ratio engine / transformers", ours_rate / hf_rate, "x")
    row("default", "kimiweb engine: time to first token", ours_ttft * 1000, "ms")
    row("default", "transformers generate(): time to first token", hf_ttft * 1000, "ms")
    prompts = [chat_prompt(loaded.tokenizer, q) for q in QUESTIONS]
    agg = concurrent_rate(engine, prompts, args.tokens)
    hf_agg = hf_batch_rate(hf, prompts, args.tokens)
    row("default", "kimiweb engine: aggregate decode, 8 concurrent streams", agg, "tok/s")
    row("default", "transformers generate(), batch of 8 (padded)", hf_agg, "tok/s")
    row("default", "  ratio 8 streams / single stream (engine)", agg / ours_rate, "x")
    cpp = llama_cpp_request(prompt, args.tokens, torch.get_num_threads())
    if cpp is None:
        print("  llama-cpp-python not installed: no llama.cpp column")
    else:
        row("default", "llama.cpp: single-stream decode", cpp[1], "tok/s")
        row("default", "  ratio engine / llama.cpp", ours_rate / cpp[1], "x")
    engine.shutdown()


# What an agent's first prompt carries besides the question: instructions and tool declarations.
AGENT_SYSTEM = (
    "You are a research agent. Think step by step, use tools, cite sources.\n# Tools\n"
    + json.dumps(
        [
            {
                "name": "web_search",
                "description": "Search the web; returns titles, URLs and snippets.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "what to search for"},
                        "max_results": {"type": "integer", "default": 5},
                    },
                    "required": ["query"],
                },
            },
            {
                "name": "browse",
                "description": "Fetch a web page and return its main text as markdown, truncated.",
                "parameters": {
                    "type": "object",
                    "properties": {"url": {"type": "string", "description": "an http or https URL"}},
                    "required": ["url"],
                },
            },
            {
                "name": "python",
                "description": "Run Python code in a sandbox without network; returns stdout, stderr and the exit status.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "description": "the program"},
                        "timeout": {"type": "number", "default": 30},
                    },
                    "required": ["code"],
                },
            },
        ],
        indent=1,
    )
)


def bench_agent(args, dtype):
    print(f"\nAgent loop: {args.rounds} rounds, each resending the whole conversation plus a tool result")
    loaded = load_model(smollm2_gguf_path(), dtype)
    tok = loaded.tokenizer
    result = "Search result: " + "the quick brown fox jumps over the lazy dog. " * 6
    for cached in (True, False):
        engine = LLMEngine(loaded, kv_cache_tokens=65536, dtype=dtype, prefix_cache=cached)
        text = f"<|im_start|>system\n{AGENT_SYSTEM}<|im_end|>\n<|im_start|>user\nFind facts about foxes.<|im_end|>\n"
        ttfts = []
        for r in range(args.rounds):
            prompt = tok.encode(text + "<|im_start|>assistant\n")
            ttft, _ = timed_request(engine, prompt, 8)
            ttfts.append((ttft, len(prompt)))
            text += f"<|im_start|>assistant\nI will search, round {r}.<|im_end|>\n<|im_start|>tool\n{result}<|im_end|>\n"
        label = "with prefix cache" if cached else "without prefix cache"
        row("agent", f"TTFT round 1 ({ttfts[0][1]} prompt tokens), {label}", ttfts[0][0] * 1000, "ms")
        row(
            "agent",
            f"TTFT round {args.rounds} ({ttfts[-1][1]} prompt tokens), {label}",
            ttfts[-1][0] * 1000,
            "ms",
        )
        row("agent", f"  ratio round {args.rounds} / round 1, {label}", ttfts[-1][0] / ttfts[0][0], "x")
        engine.shutdown()


# ---- a Moonlight-shaped MoE ---------------------------------------------------------------------

MOONLIGHT = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "hidden_size": 2048,
    "intermediate_size": 11264,
    "moe_intermediate_size": 1408,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "num_experts_per_tok": 6,
    "n_group": 1,
    "topk_group": 1,
    "routed_scaling_factor": 2.446,
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "rope_theta": 50000.0,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 8192,
    "norm_topk_prob": True,
    "tie_word_embeddings": False,
}


def moonlight_model(layers: int, vocab: int, int4: bool):
    """Random weights in Moonlight-16B-A3B's per-layer shapes; all layers MoE; experts in INT4 (random
    int4 words and scales) or bf16 (exactly those INT4 weights, dequantized)."""
    from inference.models import build_model
    from inference.quant import dequantize

    cfg = MOONLIGHT | {"num_hidden_layers": layers, "vocab_size": vocab, "first_k_dense_replace": 0}
    model = build_model(cfg, torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    h, inter, e = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["n_routed_experts"]
    for i in range(layers):
        for j in range(e):
            for proj, (n, k) in (
                ("gate_proj", (inter, h)),
                ("up_proj", (inter, h)),
                ("down_proj", (h, inter)),
            ):
                packed = torch.randint(-(2**31), 2**31 - 1, (n, k // 8), generator=gen, dtype=torch.int64).to(
                    torch.int32
                )
                scale = (torch.rand(n, k // 32, generator=gen) * 0.004 + 0.001).to(torch.bfloat16)
                base = f"model.layers.{i}.mlp.experts.{j}.{proj}"
                if int4:
                    model.load_weight(f"{base}.weight_packed", packed)
                    model.load_weight(f"{base}.weight_scale", scale)
                else:
                    model.load_weight(f"{base}.weight", dequantize(packed, scale, 32, dtype=torch.bfloat16))
    model.finalize_weights()
    return model, cfg


class _NoTokenizer:
    stop_ids: list[int] = []
    chat_template = None


def bench_moe(args):
    print(
        f"\nMoonlight-shaped MoE: {args.moe_layers} MoE layers, vocab {args.moe_vocab}, random weights, bf16 activations"
    )
    rates = {}
    for int4 in (True, False):
        model, cfg = moonlight_model(args.moe_layers, args.moe_vocab, int4)
        loaded = LoadedModel(model, _NoTokenizer(), cfg, "moonlight-mini", Path("."))
        engine = LLMEngine(loaded, kv_cache_tokens=4096, dtype=torch.bfloat16)
        prompt = list(range(100, 164))
        timed_request(engine, prompt, 2)
        runs = [timed_request(engine, prompt, args.moe_tokens) for _ in range(args.repeat)]
        ttft, rate = min(t for t, _ in runs), max(r for _, r in runs)
        label = "INT4 experts" if int4 else "bf16 experts"
        row("moe", f"{label}: single-stream decode", rate, "tok/s")
        row("moe", f"{label}: time to first token (64-token prompt)", ttft * 1000, "ms")
        rates[int4] = rate
        engine.shutdown()
        del engine, model, loaded
    row("moe", "  ratio INT4 / bf16 end to end (decode)", rates[True] / rates[False], "x")


def main(argv=None):
    global CLOCK
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", nargs="*", choices=["default", "agent", "moe"], default=["default", "agent", "moe"]
    )
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--moe-layers", type=int, default=4)
    parser.add_argument("--moe-vocab", type=int, default=16384)
    parser.add_argument("--moe-tokens", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"threads={args.threads} clock={args.clock}")
    if "default" in args.only:
        bench_default(args, dtype)
    if "agent" in args.only:
        bench_agent(args, dtype)
    if "moe" in args.only:
        bench_moe(args)
    print("\n| section | measure | value | unit |\n|---|---|---:|---|")
    for section, what, value, unit in ROWS:
        print(f"| {section} | {what.strip()} | {value:.2f} | {unit} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                [dict(zip(("section", "what", "value", "unit"), r, strict=True)) for r in ROWS], indent=1
            )
        )


if __name__ == "__main__":
    main()
