"""kimi-mini's traces over attached files: documents written in each format by their own libraries, read
back by kimiweb's extraction, served by the agent's real file tools; answers cite what a tool showed, and
the tool declaration and system message are the ones the agent sends when files are attached."""

import json
import re
from collections import Counter

import pytest
import torch

from agent.files import FILES_MARK
from agent.tools import ToolContext, tool_schemas, tools_for
from kimi_mini import files as F
from kimi_mini.data import _Trace, agent_system_prompt, build_corpus
from kimi_mini.template import render, render_segments

CITATION = re.compile(r"\[([^\[\]]+?), ((?:p\.|slide|sheet|rows?|lines?|#+) [^\]]+)\]")


@pytest.fixture(scope="module")
def traces():
    from kimi_mini.tools import agent_run_tool

    saved = _Trace.system
    _Trace.system = agent_system_prompt()
    try:
        yield F.file_traces(60, seed=5, python_tool=agent_run_tool(build_corpus()))
    finally:
        _Trace.system = saved


def test_every_flow_and_format_is_made(traces):
    tags = Counter(e.template.split(":")[1] for e in traces)
    assert {"report", "sheet", "summary", "list"} <= set(tags)
    formats = {e.template.rsplit(":", 1)[-1] for e in traces if e.template.startswith("files:report")}
    assert {"pdf", "docx", "pptx"} <= formats
    sheets = {e.template.rsplit(":", 1)[-1] for e in traces if e.template.startswith("files:sheet")}
    assert sheets == {"xlsx", "csv"}
    assert any(not e.thinking for e in traces) and any(e.thinking for e in traces)


def test_answers_cite_what_a_tool_showed_and_hold_the_value(traces):
    for ex in traces:
        shown = "\n".join(m["content"] for m in ex.messages if m["role"] == "tool")
        answer = ex.messages[-1]["content"]
        assert ex.expected and ex.expected.replace(" ", "") in answer.replace(" ", "").replace("**", "")
        for name, label in CITATION.findall(answer):
            assert f"[{name}, {label}]" in shown, (answer, shown[:500])
        if not ex.template.startswith("files:list"):
            assert CITATION.search(answer), answer


def test_declaration_and_system_message_are_the_agents_with_files(traces):
    for ex in traces:
        names = [t["function"]["name"] for t in ex.tools]
        assert names == list(tools_for(ToolContext(files_library=F.MemoryLibrary([]))))
        system = ex.messages[0]["content"]
        base, files = system.split(FILES_MARK, 1)
        assert base == agent_system_prompt()
        for name in {n for m in ex.messages for n, _ in CITATION.findall(m["content"] or "")}:
            assert name in files
        for m in ex.messages:
            for call in m.get("tool_calls") or []:
                assert call["function"]["name"] in names
                json.loads(call["function"]["arguments"])
        segs = render_segments(ex.messages, ex.tools, ex.thinking)
        assert "".join(t for t, _ in segs) == render(ex.messages, ex.tools, ex.thinking)
        if not ex.thinking:
            assert not any(m.get("reasoning_content") for m in ex.messages)


def test_memory_search_is_all_words_then_any_word():
    mf = F.MemoryFile(
        "r.pdf",
        "pdf",
        [
            F.FilePartText("r.pdf", "page", 1, "p. 1", "Revenue grew. The head of sales is Ada Vel."),
            F.FilePartText("r.pdf", "page", 2, "p. 2", "Net profit was 4.1 million euros."),
        ],
        2,
    )
    lib = F.MemoryLibrary([mf])
    hits = lib.search("head of sales", 8)
    assert [h.label for h in hits] == ["p. 1"] and "**head**" in hits[0].snippet
    assert [h.label for h in lib.search("profit nonsenseword", 8)] == ["p. 2"]
    assert [p.label for p in lib.read("r.pdf", 2, 2)] == ["p. 2"]
    assert lib.list()[0].labels == ["p. 1", "p. 2"]


def test_prefixes_split_per_declaration_and_rejoin_exactly(traces):
    from kimi_mini.base import load_tokenizer
    from kimi_mini.data import fallback_run_tool, generate
    from kimi_mini.train import split_prefixes, tokenize

    tok = load_tokenizer()
    corpus = build_corpus()
    plain = generate(6, "train", fallback_run_tool(corpus), corpus, seed=1)
    examples = plain + traces[:6]
    seqs = [tokenize(tok, e, e.tools or tool_schemas()) for e in examples]
    keys = [json.dumps(e.tools) if e.tools else "" for e in examples]
    prefixes, rest = split_prefixes(seqs, keys, tok.token_to_id("<|im_user|>"))
    assert len(prefixes) == 2
    for (ids, mask), (tail, tail_mask, g) in zip(seqs, rest, strict=True):
        assert torch.equal(torch.cat([prefixes[g], tail]), ids)
        assert not mask[: len(prefixes[g])].any(), "no trained token is in a shared prefix"
        assert torch.equal(tail_mask, mask[len(prefixes[g]) :])
    assert {g for *_, g in rest[:6]} == {0} and {g for *_, g in rest[6:]} == {1}


def test_the_hand_written_file_questions_cite_parts_their_files_have():
    from kimi_mini.files_eval import FILES_SET, load_documents

    spec = json.loads(FILES_SET.read_text())
    docs = load_documents(spec)
    assert len(spec["questions"]) >= 24 and {d.kind for d in docs.values()} >= {"pdf", "xlsx", "docx", "pptx"}
    for q in spec["questions"]:
        holders = [d for k in q["files"] for d in [docs[k]] if any(p.label in q["cite"] for p in d.parts)]
        assert len(holders) == 1, q["id"]
        assert ("number" in q) != ("any" in q), q["id"]
