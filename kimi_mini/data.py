"""Synthetic Kimi-format agent traces: questions built from templates, answered by calling tools through a
`run_tool(name, args) -> str` callable (the real agent tools, or the documented fallback), so every tool
result in a trace is what a tool really returned. Whole question templates are held out for evaluation."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.tools import tool_schemas

RunTool = Callable[[str, dict], str]

# The tool declaration v1 traces were rendered with (the agent's before the sandbox described itself): the
# v1 delta that `train --mix v3 --init-from` warm-starts from learned it, so `--mix v1` keeps it.
V1_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "web_search",
            "description": "Search the web (or the local document corpus) and return ranked results with URLs and snippets.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to search for."}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "browse",
            "description": "Open a web page (http or https URL) and return its main text as markdown, truncated.",
            "parameters": {
                "type": "object",
                "properties": {"url": {"type": "string", "description": "The absolute URL to open."}},
                "required": ["url"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "python",
            "description": "Run a Python 3 program in an isolated sandbox (no network, read-only filesystem except /tmp, 10 s CPU, 1 GiB memory) and return what it printed. Use print() for results. Only the standard library is guaranteed.",
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "The complete Python program to run."}
                },
                "required": ["code"],
            },
        },
    },
]

# The declaration the agent sends (v2 and v3 traces are rendered with it) and its digest when the shipped delta
# was trained: tests/kimi_mini fails when the agent's tools change, since the model then needs retraining.
TOOLS = tool_schemas()
TRAINED_TOOLS_SHA256 = "90702bcc74087b23c6f802fa186196a468f9ca58c2aed4a4fd8d471da5354610"


def tools_digest(tools: list[dict]) -> str:
    return hashlib.sha256(json.dumps(tools, sort_keys=True).encode()).hexdigest()


@dataclass
class Example:
    """One trace: `messages` ends with the final assistant answer; `prompt_messages` is what the model sees
    first (for evaluation); `expected` the answer an evaluator accepts; `tools_used` the tool names expected."""

    kind: str
    template: str
    messages: list[dict]
    thinking: bool
    expected: str | None
    tools_used: list[str] = field(default_factory=list)
    tools: list[dict] | None = None  # the tool declaration the trace was made with; None: the default one

    @property
    def question(self) -> str:
        return next(m["content"] for m in self.messages if m["role"] == "user")


# ---------------------------------------------------------------- a fictional corpus (so answers need lookup)

_SYL = [
    "vel",
    "mor",
    "ka",
    "dra",
    "lin",
    "tor",
    "bas",
    "ne",
    "ri",
    "os",
    "fen",
    "gal",
    "wy",
    "tha",
    "qu",
    "zen",
]
_FIRST = [
    "Ada",
    "Boris",
    "Clara",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Leon",
]
_REGIONS = [
    "the northern highlands",
    "the river delta",
    "the eastern coast",
    "the central plains",
    "the lake district",
]
_PRODUCTS = [
    "bicycles",
    "ceramic tiles",
    "telescopes",
    "paper lanterns",
    "wind turbines",
    "pianos",
    "sailcloth",
]


def _name(rng: random.Random, n=2) -> str:
    return "".join(rng.choice(_SYL) for _ in range(n)).capitalize()


def build_corpus(seed: int = 7, n: int = 360) -> list[dict]:
    """Fictional towns and companies with one page each: {url, title, text, facts}."""
    rng = random.Random(seed)
    docs, seen = [], set()
    while len(docs) < n:
        kind = "town" if len(docs) % 2 == 0 else "company"
        name = _name(rng, rng.choice([2, 3]))
        if name in seen:
            continue
        seen.add(name)
        year = rng.randint(1650, 1990)
        founder = f"{rng.choice(_FIRST)} {_name(rng)}"
        if kind == "town":
            pop = rng.randint(800, 250000)
            region = rng.choice(_REGIONS)
            title = f"{name} (town)"
            text = (
                f"{name} is a town in {region}. It was founded in {year} by {founder}. "
                f"The population of {name} is {pop}. The town is known for its market square and old bridge."
            )
            facts = {"name": name, "year": year, "founder": founder, "population": pop}
        else:
            product = rng.choice(_PRODUCTS)
            employees = rng.randint(12, 9000)
            title = f"{name} Works (company)"
            text = (
                f"{name} Works is a company that makes {product}. It was founded in {year} by {founder}. "
                f"{name} Works has {employees} employees."
            )
            facts = {"name": f"{name} Works", "year": year, "founder": founder, "employees": employees}
        url = f"https://en.wikipedia.org/wiki/{name}" + ("_Works" if kind == "company" else "")
        docs.append({"kind": kind, "url": url, "title": title, "text": text, "facts": facts})
    return docs


# ---------------------------------------------------------------- the fallback tool runner


def fallback_run_tool(corpus: list[dict]) -> RunTool:
    """Tool runner for machines without the agent's sandbox (`--fallback-tools`): `python` runs the
    code in a fresh `python -I` subprocess (not sandboxed: the generator only runs code it wrote itself);
    `web_search` ranks the corpus by word overlap; `browse` returns a corpus page."""
    by_url = {d["url"]: d for d in corpus}

    def run(name: str, args: dict) -> str:
        if name == "python":
            p = subprocess.run(
                [sys.executable, "-I", "-c", args["code"]], capture_output=True, text=True, timeout=20
            )
            return (p.stdout + p.stderr).strip() or "(no output)"
        if name == "web_search":
            words = set(args["query"].lower().replace("?", "").split())
            scored = sorted(
                corpus,
                key=lambda d: (
                    -len(words & set((d["title"] + " " + d["text"]).lower().replace(".", "").split())),
                    d["url"],
                ),
            )
            lines = []
            for i, d in enumerate(scored[:3], 1):
                lines.append(f"{i}. {d['title']}\n   {d['url']}\n   {d['text'][:120]}...")
            return "\n".join(lines)
        if name == "browse":
            d = by_url.get(args["url"])
            return f"# {d['title']}\n\n{d['text']}" if d else f"Error: could not fetch {args['url']}"
        raise ValueError(f"unknown tool {name}")

    return run


# ---------------------------------------------------------------- trace builders


TRAIN_DATE = datetime.date(2026, 1, 15)


def agent_system_prompt(today: datetime.date = TRAIN_DATE) -> str:
    """The system prompt the agent loop sends (its own function, so training matches serving)."""
    from agent.loop import system_prompt

    return system_prompt(today)


class _Trace:
    system = ""

    def __init__(self, question: str, thinking: bool, run_tool: RunTool):
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        self.messages.append({"role": "user", "content": question})
        self.thinking, self.run_tool, self.n_calls, self.used = thinking, run_tool, 0, []

    def call(self, reasoning: str, name: str, args: dict) -> str:
        call_id = f"functions.{name}:{self.n_calls}"
        self.n_calls += 1
        self.used.append(name)
        self.messages.append(
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": reasoning if self.thinking else "",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
                    }
                ],
            }
        )
        result = self.run_tool(name, args)
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        return result

    def answer(self, reasoning: str, content: str):
        self.messages.append(
            {"role": "assistant", "content": content, "reasoning_content": reasoning if self.thinking else ""}
        )


def _expr(rng: random.Random) -> tuple[str, str]:
    """An arithmetic expression as shown to the user and as Python code."""
    a, b, c = rng.randint(11, 999), rng.randint(11, 999), rng.randint(2, 99)
    form = rng.choice(["a*b", "a*b+c", "a+b*c", "(a+b)*c", "a*b-c", "a**2+b", "a*b*c", "a-b*c"])
    code = form.replace("a", str(a)).replace("b", str(b)).replace("c", str(c))
    shown = code.replace("**2", "²").replace("*", " × ").replace("+", " + ").replace("-", " - ")
    return shown, code


ARITH_TRAIN = [
    "What is {e}?",
    "Calculate {e}.",
    "Please compute {e} for me.",
    "{e} = ?",
    "Evaluate {e}",
    "What's {e}?",
    "Could you calculate {e}?",
    "I need the value of {e}.",
    "Compute {e}, please.",
    "What do you get for {e}?",
    "Quick question: {e}?",
    "Work out {e} for me.",
]
ARITH_HELD = ["Can you work out {e}?", "How much is {e}?"]
WORD_TRAIN = [
    ("A box holds {a} apples. How many apples are in {b} boxes?", "{a} * {b}", "apples"),
    ("A train travels {a} km every day. How far does it go in {b} days?", "{a} * {b}", "km"),
    ("I had {a} coins and spent {b}. How many are left?", "{a} - {b}", "coins"),
    ("A shelf holds {a} books. How many books fit on {b} shelves?", "{a} * {b}", "books"),
    ("A farm has {a} sheep and sells {b} of them. How many sheep remain?", "{a} - {b}", "sheep"),
    ("A worker earns {a} euros a day. How much does she earn in {b} days?", "{a} * {b}", "euros"),
    ("There are {a} chairs and {b} more arrive. How many chairs are there now?", "{a} + {b}", "chairs"),
]
WORD_HELD = [("Each ticket costs {a} dollars. What do {b} tickets cost in total?", "{a} * {b}", "dollars")]
DATA_OPS = {
    "mean": ("the average of", "print(sum(xs) / len(xs))", "The average is"),
    "sum": ("the sum of", "print(sum(xs))", "The sum is"),
    "max": ("the largest number in", "print(max(xs))", "The largest number is"),
    "sorted": ("the numbers sorted from smallest to largest, for", "print(sorted(xs))", "Sorted:"),
}
DATA_TRAIN = [
    "What is {op} {xs}?",
    "Find {op} this list: {xs}",
    "Give me {op} {xs}.",
    "Compute {op} the numbers {xs}.",
    "Here are some numbers: {xs}. What is {op} them?",
]
DATA_HELD = ["Tell me {op} these values: {xs}"]
FACT_TRAIN = {
    "year": [
        "When was {name} founded?",
        "What year was {name} founded?",
        "Do you know when {name} was founded?",
        "Tell me the founding year of {name}.",
    ],
    "founder": ["Who founded {name}?", "Who was the founder of {name}?", "Which person founded {name}?"],
    "population": [
        "What is the population of {name}?",
        "How many people live in {name}?",
        "Tell me the population of {name}.",
    ],
    "employees": [
        "How many employees does {name} have?",
        "How many people work at {name}?",
        "What is the number of employees of {name}?",
    ],
}
FACT_HELD = {"year": ["In what year was {name} established?"], "founder": ["Who is the founder of {name}?"]}
MULTI_TRAIN = [
    "How many years before {y} was {name} founded?",
    "How old was {name} in {y}?",
    "How old will {name} be in {y}?",
    "How many years passed between the founding of {name} and {y}?",
    "In {y}, how many years old was {name}?",
]
MULTI_HELD = ["How many years had passed since the founding of {name} by {y}?"]
CHAT_TRAIN = [
    ("Hi!", "Hello! How can I help you today?"),
    (
        "Hello, who are you?",
        "I'm Kimi, an AI assistant. I can think, search the web, read pages and run Python.",
    ),
    ("Thanks!", "You're welcome! Let me know if there is anything else."),
    (
        "What can you do?",
        "I can answer questions, search the web, read web pages and run Python code for calculations.",
    ),
    ("Good morning", "Good morning! What would you like to know?"),
    ("Tell me a joke.", "Why did the computer go to the doctor? It had a virus."),
    ("Say something nice.", "You are doing great, and your curiosity is a gift."),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
    ("How many days are in a week?", "A week has 7 days."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
]
CHAT_HELD = [
    ("Hey there", None),
    ("Thank you so much.", None),
    ("How many legs does a cat have?", "4"),
]


def _arith(rng, run_tool, thinking, templates, template_set):
    shown, code = _expr(rng)
    tpl = rng.choice(templates)
    t = _Trace(tpl.format(e=shown), thinking, run_tool)
    out = t.call(
        f"The user wants {shown}. I'll compute it with Python to be exact.",
        "python",
        {"code": f"print({code})"},
    )
    t.answer(f"Python printed {out}. That is the answer.", f"{shown} = **{out}**.")
    return Example("arithmetic", f"{template_set}:{tpl}", t.messages, thinking, out, t.used)


def _word(rng, run_tool, thinking, templates, template_set):
    q, expr, unit = rng.choice(templates)
    a, b = rng.randint(20, 900), rng.randint(2, 19)
    t = _Trace(q.format(a=a, b=b), thinking, run_tool)
    code = expr.format(a=a, b=b)
    out = t.call(f"This is {code}. Let me compute it.", "python", {"code": f"print({code})"})
    t.answer(f"The result is {out}.", f"The answer is **{out}** {unit}.")
    return Example("word_problem", f"{template_set}:{q}", t.messages, thinking, out, t.used)


def _data(rng, run_tool, thinking, templates, template_set):
    op = rng.choice(sorted(DATA_OPS))
    phrase, body, lead = DATA_OPS[op]
    xs = [rng.randint(1, 200) for _ in range(rng.randint(4, 9))]
    tpl = rng.choice(templates)
    t = _Trace(tpl.format(op=phrase, xs=", ".join(map(str, xs))), thinking, run_tool)
    out = t.call(f"I need {phrase} the list. I'll use Python.", "python", {"code": f"xs = {xs}\n{body}"})
    t.answer(f"Python gave {out}.", f"{lead} **{out}**.")
    return Example("data", f"{template_set}:{tpl}:{op}", t.messages, thinking, out, t.used)


def _lookup(t: _Trace, doc: dict, query: str) -> str:
    """web_search, then browse the first result (the page the question is about: names are unique)."""
    results = t.call(
        f"I don't know {doc['facts']['name']}. Let me search the web.", "web_search", {"query": query}
    )
    urls = re.findall(r"https?://[^\s)]+", results)
    url = urls[0] if urls else doc["url"]
    return t.call(f"The first result looks right: {url}. Let me open it.", "browse", {"url": url})


def _fact(rng, run_tool, thinking, templates, template_set, corpus):
    attr = rng.choice(sorted(templates))
    docs = [d for d in corpus if attr in d["facts"]]
    doc = rng.choice(docs)
    name, value = doc["facts"]["name"], doc["facts"][attr]
    tpl = rng.choice(templates[attr])
    t = _Trace(tpl.format(name=name), thinking, run_tool)
    _lookup(t, doc, f"{name} {'founded' if attr in ('year', 'founder') else attr}")
    lead = {
        "year": f"{name} was founded in **{value}**",
        "founder": f"{name} was founded by **{value}**",
        "population": f"The population of {name} is **{value}**",
        "employees": f"{name} has **{value}** employees",
    }[attr]
    t.answer(f"The page says the {attr} is {value}.", f"{lead} (source: [{doc['title']}]({doc['url']})).")
    return Example("factual", f"{template_set}:{tpl}", t.messages, thinking, str(value), t.used)


def _multi(rng, run_tool, thinking, templates, template_set, corpus):
    doc = rng.choice(corpus)
    name, year = doc["facts"]["name"], doc["facts"]["year"]
    y = rng.randint(2000, 2030)
    tpl = rng.choice(templates)
    t = _Trace(tpl.format(name=name, y=y), thinking, run_tool)
    _lookup(t, doc, f"{name} founded")
    out = t.call(
        f"{name} was founded in {year}. Now I compute {y} - {year}.",
        "python",
        {"code": f"print({y} - {year})"},
    )
    t.answer(
        f"{y} - {year} = {out}.",
        f"{name} was founded in {year}, so by {y} it had been **{out}** years "
        f"(source: [{doc['title']}]({doc['url']})).",
    )
    return Example("multi_step", f"{template_set}:{tpl}", t.messages, thinking, out, t.used)


def _chat(rng, run_tool, thinking, pairs, template_set):
    q, a = rng.choice(pairs)
    t = _Trace(q, thinking, run_tool)
    t.answer("This is a simple message; no tools are needed.", a or "")
    return Example("chat", f"{template_set}:{q}", t.messages, thinking, a, t.used)


def generate(
    n: int,
    split: str,
    run_tool: RunTool,
    corpus: list[dict],
    seed: int,
    thinking_off_frac=0.25,
    system: str | None = None,
):
    """`n` examples of `split` ('train' or 'eval'); eval uses only held-out templates and a held-out quarter
    of the corpus's entities. Every trace starts with `system` (default: the agent's system prompt)."""
    _Trace.system = agent_system_prompt() if system is None else system
    rng = random.Random(f"{split}:{seed}")
    held = split != "train"
    ents = [d for i, d in enumerate(corpus) if (i % 4 == 3) == held]
    makers = [
        (0.22, lambda th: _arith(rng, run_tool, th, ARITH_HELD if held else ARITH_TRAIN, split)),
        (0.10, lambda th: _word(rng, run_tool, th, WORD_HELD if held else WORD_TRAIN, split)),
        (0.14, lambda th: _data(rng, run_tool, th, DATA_HELD if held else DATA_TRAIN, split)),
        (0.22, lambda th: _fact(rng, run_tool, th, FACT_HELD if held else FACT_TRAIN, split, ents)),
        (0.17, lambda th: _multi(rng, run_tool, th, MULTI_HELD if held else MULTI_TRAIN, split, ents)),
        (
            0.15,
            lambda th: _chat(
                rng, run_tool, th, [p for p in CHAT_HELD if p[1]] if held else CHAT_TRAIN, split
            ),
        ),
    ]
    weights = [w for w, _ in makers]
    out = []
    for _ in range(n):
        make = rng.choices([m for _, m in makers], weights)[0]
        out.append(make(rng.random() >= thinking_off_frac))
    return out
