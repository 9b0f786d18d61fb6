"""How a turn's events become DOM operations: thinking is appended, never re-rendered; tool cards sit
where they happened; many tool calls get a compact summary line."""

import uuid

import pytest

from agent.corpus import SearchHit, SearchResults
from agent.events import event_from_dict
from agent.tools.web_search import fit_results
from chat.fragments import TurnProjection, project_from_db, search_sources

T = str(uuid.UUID(int=7))


def ev(seq, type_, **fields):
    """(the typed event, its seq), as the socket decodes a published event."""
    return event_from_dict({"type": type_, **fields}), seq


def test_thinking_deltas_append_to_one_segment_and_a_frame_is_one_message():
    p = TurnProjection(T)
    p.apply(*ev(1, "turn.started"))
    p.apply(*ev(2, "reasoning.delta", text="a<b"))
    first = p.take_frame()
    assert (
        f'<div hx-swap-oob="beforeend:#trace-{T}"><div class="seg seg-think" id="seg-{T}-1">a&lt;b</div></div>'
        in first
    )
    for i in range(3, 1003):
        p.apply(*ev(i, "reasoning.delta", text="x"))
    frame = p.take_frame()
    assert frame.count("hx-swap-oob") == 1  # 1,000 deltas coalesce into a single append
    assert f'<div hx-swap-oob="beforeend:#seg-{T}-1">' + "x" * 1000 + "</div>" in frame
    assert frame.endswith(f'<span class="seq" id="seq-{T}" data-seq="1002" hidden></span>')


def test_a_tool_call_splits_the_thinking_and_text_after_it_opens_a_new_segment():
    p = TurnProjection(T)
    p.apply(*ev(1, "reasoning.delta", text="before"))
    p.apply(*ev(2, "tool.started", call_id="functions.python:0", name="python"))
    p.apply(*ev(3, "tool.arguments", call_id="functions.python:0", delta='{"code": "1+1"}'))
    p.apply(
        *ev(
            4,
            "tool.finished",
            call_id="functions.python:0",
            name="python",
            arguments='{"code": "1+1"}',
            result="2",
        )
    )
    p.apply(*ev(5, "reasoning.delta", text="after"))
    kinds = [type(item).__name__ for item in p.items]
    assert kinds == ["Segment", "ToolCard", "Segment"]
    frame = p.take_frame()
    assert frame.index(f'id="seg-{T}-1"') < frame.index(f'id="tool-{T}-2"') < frame.index(f'id="seg-{T}-3"')


def test_the_answer_starting_collapses_the_panel_once_and_turn_finished_is_authoritative():
    p = TurnProjection(T)
    p.apply(*ev(1, "reasoning.delta", text="hmm"))
    p.apply(*ev(2, "content.delta", text="**Hi"))
    frame = p.take_frame()
    assert 'data-collapse="1"' in frame and "Thought for" in frame
    p.apply(*ev(3, "content.delta", text="**"))
    assert "data-collapse" not in p.take_frame()
    p.apply(*ev(4, "turn.finished", status="done", content="**Hi** there"))
    frame = p.take_frame()
    assert "<strong>Hi</strong> there" in frame and 'data-status="done"' in frame


def test_text_written_before_tool_calls_moves_from_the_answer_into_the_trace():
    p = TurnProjection(T)
    p.apply(*ev(1, "step.started", index=0))
    p.apply(*ev(2, "content.delta", text="Let me look that up."))
    p.apply(*ev(3, "tool.started", call_id="c0", name="web_search"))
    p.apply(*ev(4, "step.finished", index=0, finish_reason="tool_calls"))
    assert p.content == ""
    assert any(getattr(item, "kind", "") == "say" for item in p.items)


def test_many_tool_calls_get_a_compact_summary_by_tool():
    p = TurnProjection(T)
    for i in range(8):
        name = "python" if i % 3 else "web_search"
        p.apply(*ev(i + 1, "tool.finished", call_id=f"c{i}", name=name, arguments="{}", result="ok"))
    assert p.summary_label().endswith("· 8 tool calls (5 python, 3 web_search)")


def test_search_results_become_sources_and_unsafe_links_are_dropped():
    hits = [SearchHit("A", "https://a.example/x", "about a"), SearchHit("B", "javascript:alert(1)")]
    result = fit_results(SearchResults("a query", hits), 8000)  # what the web_search tool returns
    assert [(s["url"], s["title"], s["snippet"]) for s in search_sources(result)] == [
        ("https://a.example/x", "A", "about a")
    ]
    assert search_sources("Error: the search service failed: ConnectError") == []


def repeated_call_id_turn(rounds: int):
    """A turn whose model names every step's call `functions.python:0` (Kimi ids are per response)."""
    events = [ev(1, "turn.started")]
    for step in range(rounds):
        call = {"call_id": "functions.python:0", "name": "python"}
        args = f'{{"code": "print({step})"}}'
        events += [
            ev(0, "step.started", index=step),
            ev(0, "reasoning.delta", text=f"round {step}"),
            ev(0, "tool.started", index=0, **call),
            ev(0, "tool.arguments", call_id=call["call_id"], delta=args),
            ev(0, "tool.running", arguments=args, **call),
            ev(0, "tool.finished", arguments=args, result=f"{step}\n", **call),
            ev(0, "step.finished", index=step, finish_reason="tool_calls"),
        ]
    return [(event, seq) for seq, (event, _) in enumerate(events, 1)]


def test_a_300_round_turn_repeating_one_call_id_shows_300_cards_live():
    p = TurnProjection(T)
    for event, seq in repeated_call_id_turn(300):
        p.apply(event, seq)
    cards = [item for item in p.cards.values()]
    assert len(cards) == 300 and [c.result for c in cards] == [f"{i}\n" for i in range(300)]
    frame = p.take_frame()
    ids = {c.k for c in cards}
    assert len(ids) == 300 and all(f'id="tool-{T}-{k}"' in frame for k in ids)
    assert p.summary_label().endswith("· 300 tool calls (300 python)")


@pytest.mark.django_db
def test_a_300_round_turn_repeating_one_call_id_shows_300_cards_after_reload(make_user):
    from chat.models import Conversation, Message, Step, ToolCall, Turn

    conversation = Conversation.objects.create(owner=make_user("reloader"), title="long")
    question = Message.objects.create(conversation=conversation, role="user", content="Count.")
    turn = Turn.objects.create(conversation=conversation, user_message=question, status="done", steps=300)
    for step in range(300):
        row = Step.objects.create(
            turn=turn, index=step, reasoning=f"round {step}", finish_reason="tool_calls"
        )
        ToolCall.objects.create(
            step=row,
            call_id="functions.python:0",
            name="python",
            arguments="{}",
            result=f"{step}\n",
            status="done",
        )
    projection = project_from_db(turn)
    assert len(projection.cards) == 300
    html = projection.render_full()
    assert html.count('data-call="functions.python:0"') == 300
    assert all(f'data-step="{step}"' in html for step in range(300))


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
