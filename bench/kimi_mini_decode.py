"""Decode speed of kimi-mini through our CPU engine: INT4 routed experts vs the same model with bf16 experts
(both built from the committed artifact), single stream, greedy. Prints a table and the INT4/bf16 ratio."""

import argparse
import statistics
import time
from pathlib import Path

import torch

from inference.engine.llm_engine import LLMEngine, generate
from inference.engine.loader import load_model
from inference.engine.sequence import SamplingParams
from kimi_mini.build import build
from kimi_mini.train import ARTIFACT_FILE, ARTIFACTS


def decode_tokens_per_s(path: Path, tokens: int, repeat: int) -> float:
    loaded = load_model(path, torch.bfloat16)
    engine = LLMEngine(loaded, kv_cache_tokens=4096)
    prompt = loaded.tokenizer.tokenizer.encode(
        "<|im_user|>user<|im_middle|>Tell me about the sea.<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|><think>"
    ).ids
    rates = []
    try:
        generate(engine, prompt, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # warm up
        for _ in range(repeat):
            t0 = time.perf_counter()
            generate(engine, prompt, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            generate(engine, prompt, SamplingParams(temperature=0, max_tokens=tokens + 1, ignore_eos=True))
            rates.append(tokens / (time.perf_counter() - t0 - prefill))
    finally:
        engine.shutdown()
    return statistics.median(rates)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", default="var/bench/kimi-mini")
    args = p.parse_args()
    out = Path(args.dir)
    artifact = ARTIFACTS / ARTIFACT_FILE
    build(out / "int4", artifact, int4=True)
    build(out / "bf16", artifact, int4=False)
    int4 = decode_tokens_per_s(out / "int4", args.tokens, args.repeat)
    bf16 = decode_tokens_per_s(out / "bf16", args.tokens, args.repeat)
    print(f"{'kimi-mini experts':<20}{'decode tok/s':>14}")
    print(f"{'bf16 (baseline)':<20}{bf16:>14.1f}")
    print(f"{'INT4 W4A16':<20}{int4:>14.1f}")
    print(f"INT4 / bf16 = {int4 / bf16:.2f}x  (single stream, {args.tokens} tokens, median of {args.repeat})")


if __name__ == "__main__":
    main()
