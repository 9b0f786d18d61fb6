"""What the page makes of a resumed turn's events (chat.fragments.TurnProjection, the same code live
and after a reload): a tool call whose streaming was cut off and is streamed again shows once with
the new arguments; a step kept as an interrupted attempt is labelled and its text leaves the answer."""

import uuid

from agent import events as ev
from chat.fragments import INTERRUPTED_LABEL, TurnProjection


def test_a_tool_call_streamed_again_after_a_resume_is_one_card_with_the_new_arguments():
    p = TurnProjection(str(uuid.uuid4()))
    for event in (
        ev.TurnStarted(),
        ev.StepStarted(index=0),
        ev.ToolCallStarted(call_id="functions.python:0", name="python"),
        ev.ToolCallArguments(call_id="functions.python:0", delta='{"co'),
        ev.TurnStarted(),  # the worker died; the step is continued and the call streams anew
        ev.ToolCallStarted(call_id="functions.python:0", name="python"),
        ev.ToolCallArguments(call_id="functions.python:0", delta='{"code": "1"}'),
        ev.ToolCallRunning(call_id="functions.python:0", name="python", arguments='{"code": "1"}'),
    ):
        p.apply(event)
    assert p.tool_count == 1
    (card,) = p.cards.values()
    assert card.arguments == '{"code": "1"}'


def test_an_interrupted_attempt_is_labelled_and_its_text_is_not_the_answer():
    p = TurnProjection(str(uuid.uuid4()))
    for event in (
        ev.TurnStarted(),
        ev.StepStarted(index=0),
        ev.ReasoningDelta(text="Let me"),
        ev.ContentDelta(text="Partial"),
        ev.StepFinished(index=0, finish_reason="interrupted"),
        ev.StepStarted(index=1),
        ev.ReasoningDelta(text="Let me think."),
        ev.ContentDelta(text="Final."),
        ev.StepFinished(index=1, finish_reason="stop"),
        ev.TurnFinished(status="done", content="Final."),
    ):
        p.apply(event)
    assert p.content == "Final."
    html = p.render_full()
    assert INTERRUPTED_LABEL in html and "Partial" in html
    assert html.index("Partial") < html.index(INTERRUPTED_LABEL) < html.index("Let me think.")
