"""Score kimi-mini on the held-out templates: run each question through an agent loop (greedy decoding, real
tools), and count valid tool calls, correct final answers, and thinking-off turns without reasoning. The same
trained delta is scored in bf16 and with its experts at INT4 (exactly the build's RTN values)."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import load_base_weights, load_tokenizer
from .build import read_delta
from .data import TOOLS, build_corpus, generate
from .model import KimiMini, LoRALinear, fake_quant_int4
from .moefy import init_weights
from .template import render


def load_trained(delta_path: Path, int4: bool, tok=None, base=None) -> KimiMini:
    """The trained model for inference: LoRA merged, all weights bf16, routed experts optionally INT4."""
    delta, cfg = read_delta(delta_path)
    tok = tok or load_tokenizer()
    w = init_weights(base if base is not None else load_base_weights(), tok, cfg)
    w["embed_new"] = delta["embed_new"]
    for i in range(cfg.n_layers):
        p, perm = f"model.layers.{i}.", delta[f"layers.{i}.perm"].long()
        w[p + "mlp.gate_proj.weight"] = w[p + "mlp.gate_proj.weight"][perm]
        w[p + "mlp.up_proj.weight"] = w[p + "mlp.up_proj.weight"][perm]
        w[p + "mlp.down_proj.weight"] = w[p + "mlp.down_proj.weight"][:, perm]
        w[p + "mlp.router"] = delta[f"layers.{i}.router"]
    model = KimiMini(cfg, w)
    own = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in delta.items():
            if k in own:
                own[k].data = v.to(own[k].dtype).clone()
        for name, mod in model.named_modules():
            if isinstance(mod, LoRALinear):
                merged = mod.merged()
                if int4 and ".mlp." in name:
                    merged = fake_quant_int4(merged, cfg.group_size)
                mod.weight.data = merged.to(torch.bfloat16)
                mod.lora_b.data.zero_()
    model.to(torch.bfloat16)
    model.freeze_embedding()
    return model.eval().requires_grad_(False)


class Generator:
    """Greedy decoding with a KV cache that survives across agent rounds (re-rendered prompts share a prefix)."""

    def __init__(self, model: KimiMini, tok):
        self.m, self.tok = model, tok
        self.stop = {tok.token_to_id("<|im_end|>")}
        self.ids: list[int] = []
        self.kv: list | None = None

    @torch.no_grad()
    def _feed(self, new: list[int]) -> torch.Tensor:
        x = F.embedding(torch.tensor([new]), self.m.embedding())
        h, kv = self.m.run_layers(x, 0, self.m.cfg.n_layers, pos=len(self.ids), past=self.kv)
        self.kv = kv
        self.ids += new
        return self.m.logits(h[0, -1]).float()

    def complete(self, prompt_ids: list[int], max_new: int) -> list[int]:
        n = 0
        while n < min(len(self.ids), len(prompt_ids)) and self.ids[n] == prompt_ids[n]:
            n += 1
        n = min(n, len(prompt_ids) - 1)  # always feed at least one token to get logits
        if self.kv is not None and n < len(self.ids):
            self.kv = [(k[:, :, :n], v[:, :, :n]) for k, v in self.kv] if n else None
            self.ids = self.ids[:n]
        logits = self._feed(prompt_ids[n:])
        out: list[int] = []
        for _ in range(max_new):
            nxt = int(logits.argmax())
            out.append(nxt)
            if nxt in self.stop:
                break
            logits = self._feed([nxt])
        return out


class EngineGenerator:
    """The same interface over our serving engine (paged KV, prefix cache, INT4 MoE kernel) and a built
    checkpoint: what users get."""

    def __init__(self, path: Path, concurrency: int = 16):
        from inference.engine.llm_engine import LLMEngine
        from inference.engine.loader import load_model

        loaded = load_model(path, torch.bfloat16)
        self.engine = LLMEngine(loaded, kv_cache_tokens=32768)
        self.tok = loaded.tokenizer.tokenizer
        self.concurrency = concurrency

    def complete(self, prompt_ids: list[int], max_new: int) -> list[int]:
        from inference.engine.llm_engine import generate
        from inference.engine.sequence import SamplingParams

        # A loaded machine can take minutes per request with 16 turns in flight: no 10-minute cut-off.
        return generate(
            self.engine, prompt_ids, SamplingParams(temperature=0, max_tokens=max_new), timeout=3600
        )

    def close(self):
        self.engine.shutdown()


def parse_output(text: str, thinking: bool) -> dict:
    """Split raw model output with the server's kimi_k2 detectors: reasoning, content, tool calls."""
    from inference.server.parsers.kimi_k2 import KimiK2ReasoningDetector, KimiK2ToolCallDetector

    rd = KimiK2ReasoningDetector(in_reasoning=thinking)
    r1, c1 = rd.feed(text)
    r2, c2 = rd.finish()
    td = KimiK2ToolCallDetector()
    events = td.feed(c1 + c2) + td.finish()
    content = "".join(e for e in events if isinstance(e, str))
    return {"reasoning": r1 + r2, "content": content, "calls": td.calls}


def call_is_valid(call: dict, tools: list[dict] | None = None) -> tuple[bool, dict | None]:
    """Parses, names a declared tool (`tools`, default data.TOOLS), and its JSON arguments match the schema:
    every required field, no unknown one, each of its declared type (string or integer)."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (tools or TOOLS)}
    params = schemas.get(call.get("name"))
    if params is None:
        return False, None
    try:
        args = json.loads(call.get("arguments") or "")
    except json.JSONDecodeError:
        return False, None
    props, req = params.get("properties", {}), params.get("required", [])

    def typed(key) -> bool:
        kind = props[key].get("type")
        value = args[key]
        if kind == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        return not (kind == "string" and not isinstance(value, str))

    ok = isinstance(args, dict) and set(req) <= set(args) <= set(props) and all(typed(k) for k in args)
    return ok, args if ok else None


def answer_correct(answer: str, expected: str | None) -> bool:
    if expected is None:
        return bool(answer.strip())
    try:
        want = float(expected)
    except ValueError:
        return expected.lower() in answer.lower()
    for num in re.findall(r"-?\d+(?:\.\d+)?", answer.replace(",", "")):
        if abs(float(num) - want) < 1e-6 * max(1.0, abs(want)):
            return True
    return False


def run_agent(
    gen: Generator,
    question: str,
    thinking: bool,
    run_tool,
    max_rounds=6,
    max_new=200,
    system: str | None = None,
    tools: list[dict] | None = None,
) -> dict:
    """One agent turn like agent.loop's: system prompt (the agent's, dated today), question, then model calls
    and tool results until an answer without tool calls."""
    if system is None:
        import datetime

        from .data import agent_system_prompt

        system = agent_system_prompt(datetime.date.today())
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    calls_total = calls_valid = 0
    reasoning_seen = False
    tools_called = []
    for _ in range(max_rounds):
        prompt = render(messages, tools or TOOLS, thinking, add_generation_prompt=True)
        out = gen.complete(gen.tok.encode(prompt, add_special_tokens=False).ids, max_new)
        text = gen.tok.decode(out, skip_special_tokens=False).removesuffix("<|im_end|>")
        parsed = parse_output(text, thinking)
        reasoning_seen |= bool(parsed["reasoning"].strip())
        msg = {"role": "assistant", "content": parsed["content"], "reasoning_content": parsed["reasoning"]}
        if not parsed["calls"]:
            messages.append(msg)
            return {
                "answer": parsed["content"],
                "calls_total": calls_total,
                "calls_valid": calls_valid,
                "reasoning": reasoning_seen,
                "tools": tools_called,
                "messages": messages,
            }
        msg["tool_calls"] = []
        results = []
        for i, call in enumerate(parsed["calls"]):
            calls_total += 1
            ok, args = call_is_valid(call, tools)
            calls_valid += ok
            cid = call.get("id") or f"functions.{call.get('name')}:{i}"
            msg["tool_calls"].append(
                {
                    "id": cid,
                    "type": "function",
                    "function": {"name": call.get("name"), "arguments": call.get("arguments")},
                }
            )
            tools_called.append(call.get("name"))
            result = run_tool(call["name"], args) if ok else "Error: invalid tool call"
            results.append({"role": "tool", "tool_call_id": cid, "content": result})
        messages += [msg, *results]
    return {
        "answer": "",
        "calls_total": calls_total,
        "calls_valid": calls_valid,
        "reasoning": reasoning_seen,
        "tools": tools_called,
        "messages": messages,
    }


def evaluate(gen, examples, run_tool, progress=None) -> dict:
    """`gen`: a Generator (training code, one cache shared across examples: one question at a time) or an
    EngineGenerator, which batches: its `concurrency` questions run at once, as users' turns would."""

    def one(ex):
        t0 = time.time()
        r = run_agent(gen, ex.question, ex.thinking, run_tool)
        r.update(
            kind=ex.kind,
            template=ex.template,
            thinking=ex.thinking,
            expected=ex.expected,
            correct=answer_correct(r["answer"], ex.expected),
            seconds=round(time.time() - t0, 1),
        )
        if progress:
            progress.update(1)
        return r

    workers = getattr(gen, "concurrency", 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(one, examples))
    else:
        rows = [one(ex) for ex in examples]
    calls = sum(r["calls_total"] for r in rows)
    off = [r for r in rows if not r["thinking"]]
    return {
        "n": len(rows),
        "tool_calls": calls,
        "valid_tool_call_pct": round(100 * sum(r["calls_valid"] for r in rows) / calls, 1) if calls else None,
        "task_success_pct": round(100 * sum(r["correct"] for r in rows) / len(rows), 1),
        "by_kind": {
            k: round(
                100
                * sum(r["correct"] for r in rows if r["kind"] == k)
                / max(1, sum(r["kind"] == k for r in rows)),
                1,
            )
            for k in sorted({r["kind"] for r in rows})
        },
        "thinking_off_without_reasoning_pct": round(100 * sum(not r["reasoning"] for r in off) / len(off), 1)
        if off
        else None,
        "rows": rows,
    }


def heldout_examples(n: int, run_tool, seed: int = 1):
    return generate(n, "eval", run_tool, build_corpus(), seed)


def evaluate_cli(
    variants: list[tuple[str, Path, bool]],
    n: int,
    out: Path,
    fallback_tools: bool,
    engine: bool = True,
    workdir: Path = Path("var/kimi-mini/eval-builds"),
):
    """Score each (label, delta, int4) variant on the same held-out examples. With `engine`, each variant is
    built (INT4 or bf16 experts) and served by our engine; else run by the training code in torch."""
    from tqdm import tqdm

    from .build import build
    from .data import fallback_run_tool
    from .tools import agent_run_tool

    corpus = build_corpus()
    run_tool = fallback_run_tool(corpus) if fallback_tools else agent_run_tool(corpus)
    examples = heldout_examples(n, run_tool)
    results = {}
    tok = base = None
    bar = tqdm(total=len(variants) * len(examples), desc="eval")
    for label, delta, int4 in variants:
        t0 = time.time()
        if engine:
            path = workdir / label
            build(path, delta, int4=int4)
            gen = EngineGenerator(path)
        else:
            tok = tok or load_tokenizer()
            base = base if base is not None else load_base_weights()
            gen = Generator(load_trained(delta, int4, tok, base), tok)
        try:
            res = evaluate(gen, examples, run_tool, bar)
        finally:
            if engine:
                gen.close()
        res["seconds"] = round(time.time() - t0)
        results[label] = res
        print(label, json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))
    bar.close()
    return results
