"""Decode speed of kimi-mini through our CPU engine: INT4 routed experts vs the same model with bf16 experts
(both built from the committed artifact), single stream, greedy. Both engines are loaded side by side and
measured in alternation (int4, bf16, int4, ...), so a load change on a shared machine hits both; prints the
medians, the INT4/bf16 ratio with its range over the rounds, and the load average (`uptime`)."""

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from inference.engine.llm_engine import LLMEngine, generate
from inference.engine.loader import load_model
from inference.engine.sequence import SamplingParams
from kimi_mini.build import build
from kimi_mini.train import ARTIFACT_FILE, ARTIFACTS

PROMPT = (
    "<|im_user|>user<|im_middle|>Tell me about the sea.<|im_end|>"
    "<|im_assistant|>assistant<|im_middle|><think>"
)


class Decoder:
    def __init__(self, path: Path):
        loaded = load_model(path, torch.bfloat16)
        self.engine = LLMEngine(loaded, kv_cache_tokens=4096)
        self.prompt = loaded.tokenizer.tokenizer.encode(PROMPT).ids
        self._generate(4)  # warm up

    def _generate(self, max_tokens: int) -> float:
        t0 = time.perf_counter()
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        generate(self.engine, self.prompt, params)
        return time.perf_counter() - t0

    def tokens_per_s(self, tokens: int) -> float:
        """Decode rate: a `tokens + 1` generation less a one-token one (the prefill)."""
        prefill = self._generate(1)
        return tokens / (self._generate(tokens + 1) - prefill)

    def close(self) -> None:
        self.engine.shutdown()


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


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
    print(f"load average before: {_load()}")
    int4, bf16 = Decoder(out / "int4"), Decoder(out / "bf16")
    rates = {"int4": [], "bf16": []}
    try:
        for _ in range(args.repeat):
            rates["int4"].append(int4.tokens_per_s(args.tokens))
            rates["bf16"].append(bf16.tokens_per_s(args.tokens))
    finally:
        int4.close()
        bf16.close()
    ratios = [i / b for i, b in zip(rates["int4"], rates["bf16"], strict=True)]
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{'kimi-mini experts':<20}{'decode tok/s':>14}")
    print(f"{'bf16 (baseline)':<20}{med['bf16']:>14.1f}")
    print(f"{'INT4 W4A16':<20}{med['int4']:>14.1f}")
    print(
        f"INT4 / bf16 = {med['int4'] / med['bf16']:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}; "
        f"single stream, {args.tokens} tokens, median of {args.repeat})"
    )
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
