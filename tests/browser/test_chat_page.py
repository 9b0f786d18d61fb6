"""The chat page in a real browser (Chromium) against a live Daphne; turn events come from a publisher
speaking the worker's protocol (Redis stream + Channels group), so no worker or model is needed."""

from __future__ import annotations

import time

import pytest
from chat_fixtures import EventPublisher
from conftest import log_in
from playwright.sync_api import expect

from agent.events import (
    ContentDelta,
    ReasoningDelta,
    StepFinished,
    StepStarted,
    TurnFinished,
    TurnStarted,
)
from chat.models import Turn

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = "bench/results/screens"


def latest_turn(user) -> Turn:
    return Turn.objects.filter(conversation__owner=user).select_related("conversation").latest("created")


def send_first_message(page, live_url, text, thinking=True):
    page.goto(live_url + "/")
    toggle = page.locator("#thinking-toggle")
    if toggle.is_checked() != thinking:
        page.locator("label.toggle").click()
    page.fill("#composer-text", text)
    page.keyboard.press("Enter")
    page.wait_for_url(live_url + "/c/**")
    expect(page.locator(".turn-foot[data-status=queued]")).to_have_count(1)


def wait_socket_ready(page):
    # The client sends `resume` on open; the server answers with the replay (possibly empty).
    page.wait_for_function("() => !document.body.classList.contains('offline')")
    time.sleep(0.3)


def test_send_with_thinking_streams_thinking_then_answer(live_url, new_page, user, page_errors):
    page = new_page()
    log_in(page, live_url, user)
    send_first_message(page, live_url, "How far is the Moon?")
    turn = latest_turn(user)
    assert turn.thinking is True
    wait_socket_ready(page)
    pub = EventPublisher(turn)
    pub.emit(TurnStarted(thinking=True, model="test"))
    pub.emit(StepStarted(index=0))
    pub.emit(ReasoningDelta(text="The user asks about the Moon. "))
    pub.emit(ReasoningDelta(text="Average distance is about 384,400 km."))
    thinking = page.locator(f"#think-{turn.uuid}")
    expect(thinking.locator(".trace")).to_contain_text("Average distance is about 384,400 km.")
    expect(thinking).to_have_attribute("open", "")
    expect(page.locator(f"#sum-{turn.uuid}")).to_contain_text("Thinking")
    pub.emit(ContentDelta(text="The Moon is about **384,400 km** away"))
    pub.emit(ContentDelta(text=" on average."))
    answer = page.locator(f"#answer-{turn.uuid}")
    expect(answer.locator("strong")).to_have_text("384,400 km")
    expect(answer).to_contain_text("on average.")
    # The thinking panel folds away once the answer starts and says how long it thought.
    expect(thinking).not_to_have_attribute("open", "")
    expect(page.locator(f"#sum-{turn.uuid}")).to_contain_text("Thought for")
    pub.emit(StepFinished(index=0, finish_reason="stop"))
    pub.emit(TurnFinished(status="done", content="The Moon is about **384,400 km** away on average."))
    expect(page.locator(f"#status-{turn.uuid}")).to_have_attribute("data-status", "done")
    page.screenshot(path=f"{SHOTS}/answer-light.png", full_page=False)
    pub.drop_stream()
    assert not page_errors, page_errors
