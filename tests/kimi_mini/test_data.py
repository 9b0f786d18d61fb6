"""kimi-mini's training data: Kimi-format traces rendered by the server's template, with real tool results, and
held-out templates that never appear in training."""

import json
import subprocess
import sys

import pytest

from kimi_mini.data import TOOLS, build_corpus, fallback_run_tool, generate
from kimi_mini.template import render, render_segments


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def test_the_shipped_delta_learned_the_agents_tool_declaration():
    from agent.tools import tool_schemas
    from kimi_mini.data import TRAINED_TOOLS_SHA256, tools_digest

    assert tools_digest(tool_schemas()) == TRAINED_TOOLS_SHA256, (
        "the agent's tool schemas changed since kimi-mini was trained: retrain, then update TRAINED_TOOLS_SHA256"
    )


def test_segments_concatenate_to_the_servers_rendering_and_outputs_end_turns(corpus):
    for ex in generate(30, "train", fallback_run_tool(corpus), corpus, seed=3):
        segs = render_segments(ex.messages, TOOLS, ex.thinking)
        assert "".join(t for t, _ in segs) == render(ex.messages, TOOLS, ex.thinking)
        outputs = [t for t, out in segs if out]
        assert len(outputs) == sum(m["role"] == "assistant" for m in ex.messages)
        assert all(t.endswith("<|im_end|>") for t in outputs)
        if not ex.thinking:
            assert not any("<think>" in t or "</think>" in t for t in outputs), "thinking off: no reasoning"


def test_tool_call_arguments_are_json_matching_the_schema(corpus):
    for ex in generate(30, "train", fallback_run_tool(corpus), corpus, seed=4):
        for m in ex.messages:
            for call in m.get("tool_calls") or []:
                args = json.loads(call["function"]["arguments"])
                assert call["id"].startswith(f"functions.{call['function']['name']}:")
                assert set(args) == {"code": {"code"}, "query": {"query"}, "url": {"url"}}[next(iter(args))]


def test_held_out_templates_never_appear_in_training(corpus):
    run = fallback_run_tool(corpus)
    train = {e.template.split(":", 1)[1] for e in generate(300, "train", run, corpus, seed=0)}
    held = {e.template.split(":", 1)[1] for e in generate(60, "eval", run, corpus, seed=1)}
    assert held and not (train & held)


def test_arithmetic_trace_holds_what_the_real_python_tool_printed(corpus):
    from agent.tools import ToolContext, get_tool

    def run(name, args):
        assert name == "python"
        return get_tool("python").run(args, ToolContext()).text

    ex = next(
        e for e in generate(40, "train", fallback_run_tool(corpus), corpus, seed=5) if e.kind == "arithmetic"
    )
    call = next(m for m in ex.messages if m.get("tool_calls"))["tool_calls"][0]
    code = json.loads(call["function"]["arguments"])["code"]
    printed = run("python", {"code": code})
    assert printed == str(eval(code.removeprefix("print(").removesuffix(")")))  # noqa: S307 - our own expression
    assert printed in ex.messages[-1]["content"]


def test_the_real_search_and_browse_tools_read_the_fictional_corpus_without_django():
    code = (
        "import sys, json\n"
        "from agent.corpus import SearchResults\n"
        "from kimi_mini.data import build_corpus\n"
        "from kimi_mini.tools import agent_run_tool\n"
        "corpus = build_corpus(); run = agent_run_tool(corpus); page = corpus[5]\n"
        "hits = SearchResults.from_json(run('web_search', {'query': page['title']})).hits\n"
        "opened = run('browse', {'url': page['url']})\n"
        "print(json.dumps([hits[0].url == page['url'], page['text'] in opened, 'django' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[true, true, false]"
