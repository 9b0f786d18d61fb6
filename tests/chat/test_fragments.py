"""How a turn's events become DOM operations: thinking is appended, never re-rendered; tool cards sit
where they happened; many tool calls get a compact summary line."""

import json
import uuid

from chat.fragments import TurnProjection, search_sources

T = str(uuid.UUID(int=7))


def ev(seq, type_, **fields):
    return {"seq": seq, "turn": T, "type": type_, **fields}


def test_thinking_deltas_append_to_one_segment_and_a_frame_is_one_message():
    p = TurnProjection(T)
    p.apply(ev(1, "turn.started"))
    p.apply(ev(2, "reasoning.delta", text="a<b"))
    first = p.take_frame()
    assert (
        f'<div hx-swap-oob="beforeend:#trace-{T}"><div class="seg seg-think" id="seg-{T}-1">a&lt;b</div></div>'
        in first
    )
    for i in range(3, 1003):
        p.apply(ev(i, "reasoning.delta", text="x"))
    frame = p.take_frame()
    assert frame.count("hx-swap-oob") == 1  # 1,000 deltas coalesce into a single append
    assert f'<div hx-swap-oob="beforeend:#seg-{T}-1">' + "x" * 1000 + "</div>" in frame
    assert frame.endswith(f'<span class="seq" id="seq-{T}" data-seq="1002" hidden></span>')


def test_a_tool_call_splits_the_thinking_and_text_after_it_opens_a_new_segment():
    p = TurnProjection(T)
    p.apply(ev(1, "reasoning.delta", text="before"))
    p.apply(ev(2, "tool.started", call_id="functions.python:0", name="python"))
    p.apply(ev(3, "tool.arguments", call_id="functions.python:0", delta='{"code": "1+1"}'))
    p.apply(
        ev(
            4,
            "tool.finished",
            call_id="functions.python:0",
            name="python",
            arguments='{"code": "1+1"}',
            result="2",
        )
    )
    p.apply(ev(5, "reasoning.delta", text="after"))
    kinds = [type(item).__name__ for item in p.items]
    assert kinds == ["Segment", "ToolCard", "Segment"]
    frame = p.take_frame()
    assert frame.index(f'id="seg-{T}-1"') < frame.index(f'id="tool-{T}-2"') < frame.index(f'id="seg-{T}-3"')


def test_the_answer_starting_collapses_the_panel_once_and_turn_finished_is_authoritative():
    p = TurnProjection(T)
    p.apply(ev(1, "reasoning.delta", text="hmm"))
    p.apply(ev(2, "content.delta", text="**Hi"))
    frame = p.take_frame()
    assert 'data-collapse="1"' in frame and "Thought for" in frame
    p.apply(ev(3, "content.delta", text="**"))
    assert "data-collapse" not in p.take_frame()
    p.apply(ev(4, "turn.finished", status="done", content="**Hi** there"))
    frame = p.take_frame()
    assert "<strong>Hi</strong> there" in frame and 'data-status="done"' in frame


def test_text_written_before_tool_calls_moves_from_the_answer_into_the_trace():
    p = TurnProjection(T)
    p.apply(ev(1, "step.started", index=0))
    p.apply(ev(2, "content.delta", text="Let me look that up."))
    p.apply(ev(3, "tool.started", call_id="c0", name="web_search"))
    p.apply(ev(4, "step.finished", index=0, finish_reason="tool_calls"))
    assert p.content == ""
    assert any(getattr(item, "kind", "") == "say" for item in p.items)


def test_many_tool_calls_get_a_compact_summary_by_tool():
    p = TurnProjection(T)
    for i in range(8):
        name = "python" if i % 3 else "web_search"
        p.apply(ev(i + 1, "tool.finished", call_id=f"c{i}", name=name, arguments="{}", result="ok"))
    assert p.summary_label().endswith("· 8 tool calls (5 python, 3 web_search)")


def test_search_results_become_sources_and_unsafe_links_are_dropped():
    result = json.dumps(
        {
            "results": [
                {"title": "A", "url": "https://a.example/x"},
                {"title": "B", "url": "javascript:alert(1)"},
            ]
        }
    )
    assert [s["url"] for s in search_sources(result)] == ["https://a.example/x"]
    assert search_sources("not json") == []


def test_streaming_markdown_renders_like_the_whole_and_reuses_finished_blocks():
    from chat.fragments import StreamingMarkdown
    from chat.rendering import render_markdown

    answer = (
        "# Plan\n\nFirst a paragraph with **bold**.\n\n```python\nx = 1\n\ny = 2\n```\n\n"
        "1. one\n2. two\n\n3. three\n\n$$\na\n\nb\n$$\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nThe end."
    )
    streaming = StreamingMarkdown()
    for end in range(1, len(answer) + 1, 3):
        html = streaming.render(answer[:end])
    html = streaming.render(answer)
    assert html.replace("\n", "") == render_markdown(answer).replace("\n", "")
    assert streaming.stable_len > len(answer) // 2  # most of it was rendered once, not every frame
