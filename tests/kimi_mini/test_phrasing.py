"""kimi-mini v2 data and the hand-written eval: traces in people's phrasing whose programs compute the
question's meaning in the real sandbox, pydoc lookups over pages built as the corpus import builds them,
and a held-out set that training never sees."""

import json
import random
import re

import pytest

from kimi_mini import phrasing as P
from kimi_mini.data import build_corpus
from kimi_mini.hand_eval import CATEGORIES, check, load_hand
from kimi_mini.template import render, render_segments


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


@pytest.fixture(scope="module")
def sandbox_run(corpus):
    from kimi_mini.tools import agent_run_tool

    return agent_run_tool(corpus)


def _norm(q: str) -> str:
    return re.sub(r"\W+", " ", q.lower()).strip()


def test_numbers_in_words():
    assert P.words(312) == "three hundred and twelve"
    assert P.words(45) == "forty-five"
    assert P.words(12000) == "twelve thousand"
    assert P.words(2507) == "two thousand five hundred and seven"


@pytest.mark.parametrize("maker", [P.arithmetic, P.units_percent_dates, P.word_problems, P.list_statistics])
def test_program_output_is_the_answer_and_tools_are_real(maker, sandbox_run):
    from agent.tools import tool_schemas

    rng = random.Random(maker.__name__)
    made = [maker(rng, sandbox_run, thinking=i % 2 == 0) for i in range(6)]
    made = [e for e in made if e is not None]
    assert len(made) >= 5
    for ex in made:
        call = next(m for m in ex.messages if m.get("tool_calls"))["tool_calls"][0]
        assert call["function"]["name"] == "python"
        assert set(json.loads(call["function"]["arguments"])) == {"code"}
        printed = next(m for m in ex.messages if m["role"] == "tool")["content"]
        assert "Traceback" not in printed
        assert ex.expected in printed and ex.expected in ex.messages[-1]["content"]
        segs = render_segments(ex.messages, tool_schemas(), ex.thinking)
        assert "".join(t for t, _ in segs) == render(ex.messages, tool_schemas(), ex.thinking)


def test_a_percentage_is_computed_from_its_meaning(sandbox_run):
    rng = random.Random(3)
    for _ in range(200):
        ex = P.arithmetic(rng, sandbox_run, True)
        if ex is not None and ex.template == "v2:pct":
            break
    else:
        pytest.fail("no percentage question in 200 draws")
    code = json.loads(
        next(m for m in ex.messages if m.get("tool_calls"))["tool_calls"][0]["function"]["arguments"]
    )
    assert "%" not in code["code"] and "/ 100 *" in code["code"]


def test_pydoc_lookup_browses_the_page_and_cites_it():
    pages = P.pydoc_pages(["pprint", "warnings", "math"])
    assert {p["url"] for p in pages} >= {"https://docs.python.org/3/library/pprint.html"}
    facts = P.pydoc_facts(pages)
    assert facts and not any(f["module"] in P.EVAL_MODULES for f in facts)
    run = P.corpus_run_tool(P.PydocCorpus(pages))
    rng = random.Random(0)
    ex = next(e for e in (P.pydoc_lookup(rng, run, True, facts) for _ in range(10)) if e is not None)
    calls = [m["tool_calls"][0]["function"]["name"] for m in ex.messages if m.get("tool_calls")]
    assert calls == ["web_search", "browse"]
    fact_url = re.search(r"\((https://docs\.python\.org/3/library/\w+\.html)\)", ex.messages[-1]["content"])
    assert fact_url and fact_url.group(1) in next(m for m in ex.messages if m["role"] == "tool")["content"]


def test_hand_set_is_large_covers_every_category_and_checks_answers():
    items = load_hand()
    assert len(items) >= 150 and len({it["id"] for it in items}) == len(items)
    for c in CATEGORIES:
        assert sum(it["category"] == c for it in items) >= 20, c
    assert any(not it["thinking"] for it in items)
    pct = next(it for it in items if it["question"] == "Whats 15% of 2340?")
    assert check("15% of 2340 is **351**.", pct) and not check("2340", pct)
    assert check("That is 1,234.5", {"number": 1234.5, "tol": 0.01})
    spider = next(it for it in items if "spider" in it["question"])
    assert check("A spider has eight legs.", spider) and not check("It has 80 legs", spider)


def test_training_never_sees_a_hand_written_question(corpus):
    from kimi_mini.data import fallback_run_tool

    held = {_norm(it["question"]) for it in load_hand()}
    run = fallback_run_tool(corpus)
    rng = random.Random(0)
    qs = []
    for maker in (P.arithmetic, P.units_percent_dates, P.word_problems, P.list_statistics):
        qs += [e.question for e in (maker(rng, run, True) for _ in range(40)) if e is not None]
    ents = [d for i, d in enumerate(corpus) if i % 4 != 3]
    qs += [
        e.question for e in (P.fictional_lookup(rng, run, True, ents) for _ in range(100)) if e is not None
    ]
    qs += [p for p, _ in P.DISTILL_PROMPTS]
    assert not held & {_norm(q) for q in qs}
    fictional_eval = [it["question"] for it in load_hand() if it["category"] == "fictional_corpus"]
    seen = [d["facts"]["name"] for d in ents]
    assert not any(re.search(rf"\b{name}\b", q, re.I) for name in seen for q in fictional_eval)


def test_pydoc_pages_are_the_same_in_every_process():
    """pydoc shows function defaults with their memory address; the pages (corpus import and training
    traces alike) must not carry it, or a rerun of training tokenizes differently."""
    import subprocess
    import sys

    from corpus import pydoc_text

    here = pydoc_text.render("pty")
    assert "spawn(argv, master_read=<function _read>" in here and " at 0x" not in here
    there = subprocess.run(
        [sys.executable, "-c", "from corpus import pydoc_text; print(pydoc_text.render('pty'), end='')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert there == here
    assert P.pydoc_pages(["pty"])[0]["text"] == here
