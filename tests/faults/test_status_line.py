"""A turn waiting on the model server says so in its status line, and the line clears when it answers."""

from agent import events as ev
from agent.client import WAITING
from chat.fragments import TurnProjection


def test_a_status_event_shows_in_the_running_turns_status_line_and_clears():
    projection = TurnProjection("0d9e7c3a-6d34-4a8e-9a55-1f2b3c4d5e6f", status="queued")
    projection.apply(ev.TurnStarted(), seq=1)
    projection.take_frame()
    projection.apply(ev.TurnStatus(text=WAITING), seq=2)
    frame = projection.take_frame()
    assert 'id="status-0d9e7c3a-6d34-4a8e-9a55-1f2b3c4d5e6f"' in frame
    assert f'role="status">{WAITING}</span>' in frame
    projection.apply(ev.TurnStatus(text=""), seq=3)
    assert WAITING not in projection.take_frame()
    assert WAITING not in projection.render_full()
