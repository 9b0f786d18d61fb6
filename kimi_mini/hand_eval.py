"""The hand-written held-out set (`eval/hand.jsonl`): questions phrased as people phrase them, written apart
from the trace generator and never trained on, scored per category through the agent loop with the real tools
(bubblewrap `python`, `web_search` / `browse` over kimiweb's own corpus in Postgres: the pydoc fallback that
`make run` imports here, plus the fictional pages `seed-corpus` adds).

Each item has a checker: `number` (with `tol`; the answer passes when any number in it is within `tol`) or
`any` (accepted substrings, case-insensitive; a purely numeric one must match a whole number token; an
empty list accepts any non-empty answer)."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HAND_SET = Path(__file__).resolve().parent / "eval" / "hand.jsonl"
CATEGORIES = [
    "arithmetic",
    "units_percent_dates",
    "word_problems",
    "list_statistics",
    "python_docs",
    "fictional_corpus",
    "chat",
]
# Any of the template's special-token strings in a shown answer is a leak (the parsers should have taken them).
_SPECIAL = re.compile(r"<\|[a-z_]+\|>|</?think>")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def load_hand(path: Path = HAND_SET) -> list[dict]:
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for it in items:
        if it["category"] not in CATEGORIES:
            raise ValueError(f"{it['id']}: unknown category {it['category']!r}")
        if ("number" in it) == ("any" in it):
            raise ValueError(f"{it['id']}: needs exactly one checker, number or any")
    return items


def numbers_in(text: str) -> list[float]:
    out = []
    for tok in _NUMBER.findall(text):
        digits = tok.replace(",", "")
        try:
            out.append(float(digits))
        except ValueError:
            continue
    return out


def check(answer: str, item: dict) -> bool:
    answer = answer or ""
    if "number" in item:
        return any(abs(x - item["number"]) <= item["tol"] for x in numbers_in(answer))
    accepted = item["any"]
    if not accepted:
        return bool(answer.strip())
    low = answer.lower()
    for a in accepted:
        if a.isdigit():
            if any(x == float(a) for x in numbers_in(answer)):
                return True
        elif a.lower() in low:
            return True
    return False


def corpus_run_tool():
    """The agent's real tools over kimiweb's corpus app (`corpus.search.DocumentCorpus`, Postgres full-text
    search, as the chat's `web_search` local backend uses it). Needs Django settings and a database holding
    the corpus (`manage.py import_documents --default-corpus`, `python -m kimi_mini seed-corpus`)."""
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")
    import django

    django.setup()
    from django.db import close_old_connections

    from agent.tools import ToolContext, ToolError, get_tool
    from agent.tools.base import SearchSettings
    from corpus.models import Document
    from corpus.search import DocumentCorpus

    if not Document.objects.filter(source__in=("pydoc", "python-docs")).exists():
        raise RuntimeError(
            "the corpus holds no Python documentation: run `manage.py import_documents --default-corpus`"
        )
    corpus = DocumentCorpus()

    def run(name: str, args: dict) -> str:
        ctx = ToolContext(timeout=30.0, corpus=corpus, search=SearchSettings(backend="local"))
        try:
            return get_tool(name).run(args, ctx).text
        except ToolError as exc:
            return f"Error: {exc}"
        finally:
            close_old_connections()

    return run


def _summary(rows: list[dict]) -> dict:
    def pct(a, b):
        return round(100 * a / b, 1) if b else None

    calls = sum(r["calls_total"] for r in rows)
    off = [r for r in rows if not r["thinking"]]
    by_cat = {}
    for c in CATEGORIES:
        rs = [r for r in rows if r["category"] == c]
        if rs:
            ok = sum(r["correct"] for r in rs)
            by_cat[c] = {"n": len(rs), "correct": ok, "success_pct": pct(ok, len(rs))}
    return {
        "n": len(rows),
        "task_success_pct": pct(sum(r["correct"] for r in rows), len(rows)),
        "by_category": by_cat,
        "tool_calls": calls,
        "valid_tool_call_pct": pct(sum(r["calls_valid"] for r in rows), calls),
        "answers_with_special_tokens": sum(r["special_tokens"] for r in rows),
        "thinking_off_without_reasoning_pct": pct(sum(not r["reasoning"] for r in off), len(off)),
    }


def interleaved(items: list[dict]) -> list[dict]:
    """Round-robin over the categories, so a run stopped early has scored every category alike."""
    rank = {}
    for it in items:
        rank[it["id"]] = sum(o["category"] == it["category"] for o in items[: items.index(it)])
    return sorted(items, key=lambda it: (rank[it["id"]], CATEGORIES.index(it["category"])))


def summarize_rows(path: Path) -> dict:
    """The summary of the rows a (possibly unfinished) run wrote to `path`, one JSON object a line."""
    return _summary([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def evaluate_hand(gen, items: list[dict], run_tool, progress=None, rows_path: Path | None = None) -> dict:
    """kimi-mini through the agent loop (`evaluate.run_agent`) on every item, prompted as the agent prompts it
    (its system prompt dated today, its current tool declaration); `gen` as in `evaluate`."""
    from agent.tools import tool_schemas

    from .evaluate import run_agent

    tools = tool_schemas()  # the declaration the agent sends users' turns with

    def one(it):
        t0 = time.time()
        r = run_agent(gen, it["question"], it["thinking"], run_tool, tools=tools)
        r.update(
            id=it["id"],
            category=it["category"],
            thinking=it["thinking"],
            correct=check(r["answer"], it),
            special_tokens=bool(_SPECIAL.search(r["answer"])),
            seconds=round(time.time() - t0, 1),
        )
        if rows_path is not None:
            with lock, open(rows_path, "a") as f:
                f.write(json.dumps(r, default=str) + "\n")
        if progress:
            progress.update(1)
        return r

    import threading

    lock = threading.Lock()
    workers = getattr(gen, "concurrency", 1)
    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(one, items))
    return {**_summary(rows), "rows": rows}


def evaluate_base(items: list[dict], concurrency: int = 16, max_new: int = 200, progress=None) -> dict:
    """The base SmolLM2-135M-Instruct as the server serves it (its own chat template, no tools): it answers
    every question directly."""
    import torch

    from inference.engine.llm_engine import LLMEngine, generate
    from inference.engine.loader import load_model, smollm2_gguf_path
    from inference.engine.sequence import SamplingParams
    from inference.server.chat_templates import render_chat

    loaded = load_model(smollm2_gguf_path(), torch.bfloat16)
    engine = LLMEngine(loaded, kv_cache_tokens=32768)
    tok = loaded.tokenizer

    def one(it):
        prompt = render_chat(
            tok.chat_template, [{"role": "user", "content": it["question"]}], add_generation_prompt=True
        )
        ids = tok.tokenizer.encode(prompt, add_special_tokens=False).ids
        out = generate(engine, ids, SamplingParams(temperature=0, max_tokens=max_new), timeout=3600)
        text = tok.tokenizer.decode(out, skip_special_tokens=True)
        if progress:
            progress.update(1)
        return {
            "id": it["id"],
            "category": it["category"],
            "thinking": it["thinking"],
            "answer": text,
            "correct": check(text, it),
            "calls_total": 0,
            "calls_valid": 0,
            "reasoning": False,
            "special_tokens": bool(_SPECIAL.search(text)),
        }

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            rows = list(pool.map(one, items))
    finally:
        engine.shutdown()
    return {**_summary(rows), "rows": rows}


def hand_cli(
    variants, out: Path, base: bool, only: list[str] | None = None, limit: int = 0, resume: bool = False
):
    """Score each (label, delta, int4) variant, built and served by our engine, and optionally the base."""
    from tqdm import tqdm

    from .build import build
    from .evaluate import EngineGenerator

    items = interleaved(load_hand())
    if only:
        items = [it for it in items if it["category"] in only]
    if limit:
        items = items[:limit]
    results = json.loads(out.read_text()) if out.exists() else {}
    bar = tqdm(total=len(items) * (len(variants) + base), desc="eval hand")
    if base:
        t0 = time.time()
        res = evaluate_base(items, progress=bar)
        res["seconds"] = round(time.time() - t0)
        results["smollm2-base (no tools)"] = res
        _report("smollm2-base (no tools)", res, out, results)
    if variants:
        run_tool = corpus_run_tool()
    for label, delta, int4 in variants:
        t0 = time.time()
        path = Path("var/kimi-mini/eval-builds") / label
        build(path, delta, int4=int4)
        gen = EngineGenerator(path)
        rows_path = out.with_name(f"{out.stem}.{label}.rows.jsonl")
        todo = items
        if resume and rows_path.exists():  # an interrupted run: score only what it had not finished
            done = {json.loads(line)["id"] for line in rows_path.read_text().splitlines() if line.strip()}
            todo = [it for it in items if it["id"] not in done]
        else:
            rows_path.unlink(missing_ok=True)
        try:
            evaluate_hand(gen, todo, run_tool, bar, rows_path)
            res = summarize_rows(rows_path)
        finally:
            gen.close()
        res["seconds"] = round(time.time() - t0)
        results[label] = res
        _report(label, res, out, results)
    bar.close()
    return results


def _report(label, res, out: Path, results):
    print(label, json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))


def table(results: dict) -> str:
    """A markdown table: one row per variant, success per category, then the format metrics."""
    head = ["variant", "overall", *CATEGORIES, "valid calls", "special tokens", "thinking off → none"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in results.items():
        cats = []
        for c in CATEGORIES:
            got = r["by_category"].get(c)
            cats.append(
                f"{got['success_pct']} ({got['correct']}/{got['n']})" if got and "correct" in got else "–"
            )
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    f"{r['task_success_pct']}% ({r['n']})",
                    *cats,
                    f"{r['valid_tool_call_pct']}%" if r["valid_tool_call_pct"] is not None else "–",
                    str(r["answers_with_special_tokens"]),
                    f"{r['thinking_off_without_reasoning_pct']}%"
                    if r["thinking_off_without_reasoning_pct"] is not None
                    else "–",
                ]
            )
            + " |"
        )
    return "\n".join(lines)
