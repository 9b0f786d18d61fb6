"""Kimi K2 output parsing: reasoning and tool calls come out the same however the text is chunked."""

import json

import pytest

from inference.server.chat_templates import KIMI_K2_SPECIAL_TOKENS
from inference.server.parsers import (
    KimiK2ReasoningDetector,
    KimiK2ToolCallDetector,
    ToolCallArguments,
    ToolCallStart,
)

SECTION = "<|tool_calls_section_begin|>"
END_SECTION = "<|tool_calls_section_end|>"


def call(id_, args):
    return f"<|tool_call_begin|>{id_}<|tool_call_argument_begin|>{args}<|tool_call_end|>"


TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": parameters}}
    for name, parameters in (
        ("web_search", {"type": "object", "properties": {"query": {}}, "required": ["query"]}),
        ("browse", {"type": "object", "properties": {"url": {}}, "required": ["url"]}),
        ("python", {"type": "object", "properties": {"code": {}}, "required": ["code"]}),
        ("read_file", {"type": "object", "properties": {"path": {}, "pages": {}}, "required": ["path"]}),
        ("get_weather", {"type": "object", "properties": {"city": {}}}),
        ("f", {"type": "object", "properties": {}}),
    )
]


def parse(text: str, chunks: list[str] | None = None, in_reasoning: bool = False, tools=None):
    """Run both detectors over `chunks` (default: the whole text at once) like the server does."""
    reasoning_parser, tool_parser = KimiK2ReasoningDetector(in_reasoning), KimiK2ToolCallDetector(tools)
    reasoning, content, starts, fragments = [], [], [], {}

    def route(events):
        for ev in events:
            if isinstance(ev, str):
                content.append(ev)
            elif isinstance(ev, ToolCallStart):
                starts.append((ev.index, ev.id, ev.name))
                fragments[ev.index] = ""
            else:
                assert isinstance(ev, ToolCallArguments)
                assert ev.index in fragments, "arguments before their call started"
                fragments[ev.index] += ev.fragment

    for piece in chunks if chunks is not None else [text]:
        r, c = reasoning_parser.feed(piece)
        reasoning.append(r)
        route(tool_parser.feed(c))
    r, c = reasoning_parser.finish()
    reasoning.append(r)
    route(tool_parser.feed(c))
    route(tool_parser.finish())
    calls = [(id_, name, fragments[i]) for i, id_, name in starts]
    return "".join(reasoning), "".join(content), calls, content


CASES = {
    "no tool calls": (
        "<think>I know this.</think>Paris is the capital.",
        ("I know this.", "Paris is the capital.", []),
    ),
    "one call, thinking ends at the section": (
        "<think>Need data." + SECTION + call("functions.web_search:0", '{"query": "x"}') + END_SECTION,
        ("Need data.", "", [("functions.web_search:0", "web_search", '{"query": "x"}')]),
    ),
    "several calls with text before the section": (
        "<think>plan</think>Let me check. "
        + SECTION
        + call("functions.web_search:0", '{"query": "a <b> & c"}')
        + call("functions.browse:1", '{"url": "https://e.com/?q=1"}')
        + call("functions.python:2", '{"code": "print(\'}\')"}')
        + END_SECTION,
        (
            "plan",
            "Let me check. ",
            [
                ("functions.web_search:0", "web_search", '{"query": "a <b> & c"}'),
                ("functions.browse:1", "browse", '{"url": "https://e.com/?q=1"}'),
                ("functions.python:2", "python", '{"code": "print(\'}\')"}'),
            ],
        ),
    ),
    "malformed JSON is passed through raw": (
        f"<think>x</think>{SECTION}{call('functions.web_search:0', '{query: oops')}{END_SECTION}",
        ("x", "", [("functions.web_search:0", "web_search", "{query: oops")]),
    ),
    "unicode and text that merely looks like markers": (
        "<think>日本語 < think > <|im not a token</think>Ünïcødé <|tool_call and <thinker>",
        ("日本語 < think > <|im not a token", "Ünïcødé <|tool_call and <thinker>", []),
    ),
    "a bare call id gets a functions.NAME:IDX id": (
        f"{SECTION}{call('get_weather', '{}')}{END_SECTION}",
        ("", "", [("functions.get_weather:0", "get_weather", "{}")]),
    ),
    "singular section markers of other Kimi K2 releases": (
        f"<|tool_call_section_begin|>{call('functions.f:0', '[]')}<|tool_call_section_end|>",
        ("", "", [("functions.f:0", "f", "[]")]),
    ),
    "stray tool markers outside a section are dropped (as seen live)": (
        '<think>ok</think>Darny.python:0<|tool_call_argument_begin|>{"code": "1"}<|tool_call_end|>'
        + END_SECTION
        + " end<|tool_call_begin|>",
        ("ok", 'Darny.python:0{"code": "1"} end', []),
    ),
    "stray tool markers inside reasoning are dropped": (
        "<think>a<|tool_call_end|>b<|tool_calls_section_end|>c</think>d",
        ("abc", "d", []),
    ),
    "a header without an argument marker does not swallow the next call": (
        SECTION
        + "<|tool_call_begin|>functions.read_file:0"
        + call("functions.get_weather:1", '{"city": "Oslo"}')
        + END_SECTION,
        (
            "",
            "",
            [
                ("functions.read_file:0", "read_file", ""),
                ("functions.get_weather:1", "get_weather", '{"city": "Oslo"}'),
            ],
        ),
    ),
    "a literal <think> inside the answer stays out of reasoning and content": (
        "<think>plan</think>Use <think> tags like this. Done.",
        ("plan", "Use  tags like this. Done.", []),
    ),
    "a repeated call id is renumbered": (
        SECTION
        + call("functions.web_search:0", '{"query": "a"}')
        + call("functions.web_search:0", '{"query": "b"}')
        + END_SECTION,
        (
            "",
            "",
            [
                ("functions.web_search:0", "web_search", '{"query": "a"}'),
                ("functions.web_search:1", "web_search", '{"query": "b"}'),
            ],
        ),
    ),
    "ids that are not functions.NAME:IDX take the one tool whose schema fits": (
        SECTION
        + call("0", '{"query": "q"}')
        + call("call_3", '{"url": "https://e.com"}')
        + call("toolu_01A", '{"path": "a.pdf", "pages": "1-2"}')
        + END_SECTION,
        (
            "",
            "",
            [
                ("functions.web_search:0", "web_search", '{"query": "q"}'),
                ("functions.browse:1", "browse", '{"url": "https://e.com"}'),
                ("functions.read_file:2", "read_file", '{"path": "a.pdf", "pages": "1-2"}'),
            ],
        ),
    ),
    "an id no single schema fits is a call with no name": (
        SECTION + call("call_9", "{}") + call("call_8", '{"nope": 1}') + END_SECTION,
        ("", "", [("functions.unknown:0", "", "{}"), ("functions.unknown:1", "", '{"nope": 1}')]),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_whole_output_parses_into_reasoning_content_and_calls(name):
    text, (reasoning, content, calls) = CASES[name]
    assert parse(text, tools=TOOLS)[:3] == (reasoning, content, calls)


@pytest.mark.parametrize("name", CASES)
def test_split_at_every_byte_boundary_gives_the_same_result(name):
    text, expected = CASES[name]
    raw = text.encode()
    for cut in range(1, len(raw)):
        # Detokenizers never emit half a UTF-8 character; cut at the nearest character boundary.
        head = raw[:cut].decode("utf-8", errors="ignore")
        chunks = [head, text[len(head) :]]
        assert parse(text, chunks, tools=TOOLS)[:3] == expected, f"split at byte {cut}"


@pytest.mark.parametrize("name", CASES)
def test_character_by_character_streaming_never_leaks_a_marker_into_content(name):
    text, expected = CASES[name]
    reasoning, content, calls, pieces = parse(text, list(text), tools=TOOLS)
    assert (reasoning, content, calls) == expected
    for marker in KIMI_K2_SPECIAL_TOKENS:
        assert all(marker not in piece for piece in pieces)
        assert marker not in reasoning


def test_reasoning_starts_open_when_the_prompt_ended_with_think():
    reasoning, content, calls, _ = parse("", ["Let me ", "think.</th", "ink>Answer."], in_reasoning=True)
    assert (reasoning, content, calls) == ("Let me think.", "Answer.", [])


def test_a_call_cut_short_by_max_tokens_reports_its_raw_arguments():
    text = (
        f"{SECTION}<|tool_call_begin|>functions.web_search:0<|tool_call_argument_begin|>"
        + '{"query": "unfini'
    )
    assert parse(text)[2] == [("functions.web_search:0", "web_search", '{"query": "unfini')]


def test_arguments_stream_in_fragments_that_join_to_valid_json():
    args = json.dumps({"query": "kimi k2 thinking", "n": 3})
    text = f"{SECTION}{call('functions.web_search:0', args)}{END_SECTION}"
    parser = KimiK2ToolCallDetector()
    events = []
    for i in range(0, len(text), 5):
        events += parser.feed(text[i : i + 5])
    events += parser.finish()
    assert isinstance(events[0], ToolCallStart)
    fragments = [e.fragment for e in events if isinstance(e, ToolCallArguments)]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"query": "kimi k2 thinking", "n": 3}
    assert parser.has_calls


def test_text_after_the_section_is_content():
    assert parse(f"{SECTION}{call('functions.f:0', '{}')}{END_SECTION} done")[1] == " done"


def test_a_second_think_after_a_prompt_that_opened_one_is_not_reasoning_text():
    text = "<think>Let me think.</think>Answer."
    for cut in range(1, len(text)):
        assert parse(text, [text[:cut], text[cut:]], in_reasoning=True)[:3] == (
            "Let me think.",
            "Answer.",
            [],
        )


def test_ids_are_unique_even_when_a_renumbered_id_meets_a_later_model_id():
    text = SECTION + call("functions.f:1", "{}") + call("functions.f:1", "{}") + call("functions.f:2", "{}")
    ids = [c[0] for c in parse(text, tools=TOOLS)[2]]
    assert len(set(ids)) == 3
